import { RemovalPolicy } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { XmppServiceProps } from './xmpp-service.ts';
import { parseContactAddresses } from '../../shared/contact-addresses.ts';

/** Reads one context value (`-c key=value` or cdk.json "context"); undefined when unset. */
export type ContextReader = (key: string) => unknown;

/** Every context parameter the app understands (documented in docs/deploy.md). */
export const CONTEXT_KEYS = [
  'domain',
  'stackName',
  'federation',
  'components',
  'federationAzs',
  'registration',
  'customDomain',
  'certificateArn',
  'customDomainPath',
  'logRetentionDays',
  'removalPolicy',
  'logLevel',
  'tracing',
  'alarmEmail',
  'dashboard',
  'throttleRate',
  'throttleBurst',
  'webClient',
  'uploads',
  's2sInsecureDomains',
  'componentSources',
  'resumeSeconds',
  'pushSummary',
  'contactAddresses',
  'turnHost',
  'turnSecretArn',
  'admins',
  'tcpClients',
  'userInvites',
] as const;

export const DEFAULT_STACK_NAME = 'Xmpp';

/** Validated here, so a bad value fails `cdk synth` instead of the deployed handlers. */
function contactAddresses(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  parseContactAddresses(value, 'Context "contactAddresses"');
  return value;
}

/** XEP-0215: both or neither (the host, and the Secrets Manager secret shared with the TURN server). */
function turn(host: string | undefined, secretArn: string | undefined): XmppServiceProps['turn'] {
  if (host === undefined && secretArn === undefined) return undefined;
  if (host === undefined || secretArn === undefined) throw new Error('Context "turnHost" and "turnSecretArn" go together');
  return { host, secretArn };
}

function unset(v: unknown): boolean {
  return v === undefined || v === null || v === '';
}

function bool(read: ContextReader, key: string): boolean | undefined {
  const v = read(key);
  if (unset(v)) return undefined;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(true|false)$/i.test(v)) return v.toLowerCase() === 'true';
  throw new Error(`Context "${key}" must be true or false, got "${String(v)}"`);
}

function int(read: ContextReader, key: string): number | undefined {
  const v = read(key);
  if (unset(v)) return undefined;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`Context "${key}" must be a positive integer, got "${String(v)}"`);
  return n;
}

function nonNegativeInt(read: ContextReader, key: string): number | undefined {
  const v = read(key);
  if (unset(v)) return undefined;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`Context "${key}" must be a whole number of seconds, got "${String(v)}"`);
  return n;
}

function str(read: ContextReader, key: string): string | undefined {
  const v = read(key);
  if (unset(v)) return undefined;
  if (typeof v !== 'string') throw new Error(`Context "${key}" must be a string, got ${JSON.stringify(v)}`);
  return v;
}

/** The stack name: context `stackName`, default "Xmpp". */
export function stackNameFromContext(read: ContextReader): string {
  const name = str(read, 'stackName') ?? DEFAULT_STACK_NAME;
  if (!/^[A-Za-z][A-Za-z0-9-]{0,127}$/.test(name)) {
    throw new Error(`Context "stackName" "${name}" is not a valid CloudFormation stack name`);
  }
  return name;
}

/** Turns context parameters into XmppService props; throws a clear error for missing or bad values. */
export function servicePropsFromContext(read: ContextReader): XmppServiceProps {
  const domain = str(read, 'domain');
  if (!domain) {
    throw new Error('Missing context "domain": the XMPP domain to serve is required, e.g. `npx cdk deploy -c domain=example.com`');
  }

  const customDomainName = str(read, 'customDomain');
  const certificateArn = str(read, 'certificateArn');
  if (customDomainName && !certificateArn) {
    throw new Error('Context "customDomain" needs "certificateArn" (an ACM certificate for that name, in the stack\'s region)');
  }
  if (certificateArn && !customDomainName) throw new Error('Context "certificateArn" is only used with "customDomain"');
  const customDomainPath = str(read, 'customDomainPath');

  const retentionDays = int(read, 'logRetentionDays');
  if (retentionDays !== undefined && !Object.values(logs.RetentionDays).includes(retentionDays)) {
    const allowed = Object.values(logs.RetentionDays).filter((d) => typeof d === 'number' && d > 0);
    throw new Error(`Context "logRetentionDays" must be one of ${allowed.join(', ')}; got ${retentionDays}`);
  }

  const removal = str(read, 'removalPolicy');
  let removalPolicy: RemovalPolicy | undefined;
  if (removal !== undefined) {
    if (!/^(retain|destroy)$/i.test(removal)) throw new Error(`Context "removalPolicy" must be retain or destroy, got "${removal}"`);
    removalPolicy = removal.toLowerCase() === 'retain' ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;
  }

  const level = str(read, 'logLevel');
  let logLevel: lambda.ApplicationLogLevel | undefined;
  if (level !== undefined) {
    const levels = Object.values(lambda.ApplicationLogLevel) as string[];
    if (!levels.includes(level.toUpperCase())) throw new Error(`Context "logLevel" must be one of ${levels.join(', ')}, got "${level}"`);
    logLevel = level.toUpperCase() as lambda.ApplicationLogLevel;
  }

  const rateLimit = int(read, 'throttleRate');
  const burstLimit = int(read, 'throttleBurst');

  return {
    domain,
    federation: bool(read, 'federation'),
    componentListener: bool(read, 'components'),
    tcpClients: bool(read, 'tcpClients'),
    userInvites: bool(read, 'userInvites'),
    componentSources: str(read, 'componentSources')?.split(',').map((d) => d.trim()).filter(Boolean),
    s2sInsecureDomains: str(read, 's2sInsecureDomains')?.split(',').map((d) => d.trim()).filter(Boolean),
    federationAzs: int(read, 'federationAzs'),
    registration: bool(read, 'registration'),
    smResumeSeconds: nonNegativeInt(read, 'resumeSeconds'),
    mucInlineFanoutMax: int(read, 'mucInlineFanoutMax'),
    roomFanoutConcurrency: int(read, 'roomFanoutConcurrency'),
    pushSummary: bool(read, 'pushSummary'),
    contactAddresses: contactAddresses(str(read, 'contactAddresses')),
    turn: turn(str(read, 'turnHost'), str(read, 'turnSecretArn')),
    admins: str(read, 'admins')?.split(',').map((a) => a.trim()).filter(Boolean).map((a) => {
      if (!/^[^@/\s]+@[^@/\s]+$/.test(a)) throw new Error(`Context "admins" takes bare JIDs (user@domain), got "${a}"`);
      return a;
    }),
    customDomain: customDomainName && certificateArn
      ? { domainName: customDomainName, certificateArn, ...(customDomainPath !== undefined ? { basePath: customDomainPath } : {}) }
      : undefined,
    logRetention: retentionDays as logs.RetentionDays | undefined,
    removalPolicy,
    logLevel,
    tracing: bool(read, 'tracing'),
    webClient: bool(read, 'webClient'),
    uploads: bool(read, 'uploads'),
    alarmEmail: str(read, 'alarmEmail'),
    dashboard: bool(read, 'dashboard'),
    throttle: rateLimit !== undefined || burstLimit !== undefined
      ? { rateLimit: rateLimit ?? 2000, burstLimit: burstLimit ?? 1000 }
      : undefined,
  };
}
