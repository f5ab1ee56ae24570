import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { XmppStack } from '../../cdk/lib/xmpp-stack.ts';
import type { XmppServiceProps } from '../../cdk/lib/xmpp-service.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Small stand-in handlers, so these tests do not depend on (or wait for) the real Lambda code. */
export const FIXTURE_ENTRIES = {
  connect: path.join(here, 'fixtures', 'connect.ts'),
  stream: path.join(here, 'fixtures', 'stream.ts'),
};

export interface Synthesized {
  stack: XmppStack;
  template: Template;
  json: { Resources: Record<string, Resource>; Outputs?: Record<string, { Value: unknown }> };
  outdir: string;
}

export interface Resource {
  Type: string;
  Properties?: Record<string, any>;
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
}

/** Synthesizes one stack (bundling included) into a fresh directory. Do it once per configuration. */
export function synth(props: Partial<XmppServiceProps> = {}): Synthesized {
  const outdir = mkdtempSync(path.join(tmpdir(), 'xmpp-cdk-test-'));
  const app = new App({ outdir });
  const stack = new XmppStack(app, 'XmppTest', {
    service: {
      domain: 'example.com',
      entries: FIXTURE_ENTRIES,
      ...props,
    },
  });
  const template = Template.fromStack(stack);
  return { stack, template, json: template.toJSON() as Synthesized['json'], outdir };
}

export function resourcesOfType(s: Synthesized, type: string): Array<[string, Resource]> {
  return Object.entries(s.json.Resources).filter(([, r]) => r.Type === type);
}

export function onlyResource(s: Synthesized, type: string): [string, Resource] {
  const found = resourcesOfType(s, type);
  if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
  return found[0]!;
}

/** The logical id of the resource whose id starts with the given construct path prefix (e.g. "XmppStreamFunction"). */
export function logicalId(s: Synthesized, type: string, prefix: string): string {
  const found = resourcesOfType(s, type).filter(([id]) => id.startsWith(prefix));
  if (found.length !== 1) throw new Error(`expected one ${type} with id ${prefix}*, found ${found.map(([id]) => id).join(', ')}`);
  return found[0]![0];
}

export interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
}

/** Every statement of the inline policies attached to the given role. */
export function statementsOfRole(s: Synthesized, roleLogicalId: string): Statement[] {
  return resourcesOfType(s, 'AWS::IAM::Policy')
    .filter(([, p]) => (p.Properties!.Roles as Array<{ Ref: string }>).some((r) => r.Ref === roleLogicalId))
    .flatMap(([, p]) => p.Properties!.PolicyDocument.Statement as Statement[]);
}

export function actions(statement: Statement): string[] {
  return Array.isArray(statement.Action) ? statement.Action : [statement.Action];
}

export function resources(statement: Statement): unknown[] {
  return Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource];
}

/** Actions of all statements of a role, flattened. */
export function roleActions(s: Synthesized, roleLogicalId: string): string[] {
  return statementsOfRole(s, roleLogicalId).flatMap(actions);
}

export function roleOfFunction(s: Synthesized, functionLogicalId: string): string {
  return (s.json.Resources[functionLogicalId]!.Properties!.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
}

/** Renders an intrinsic-laden value as text, for substring checks. */
export function text(value: unknown): string {
  return JSON.stringify(value);
}
