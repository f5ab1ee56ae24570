/**
 * XEP-0060 node configuration for PEP nodes: the defaults XEP-0163 §8 asks for, the
 * pubsub#node_config form (get/set), and publish-options preconditions (XEP-0060 §7.1.5).
 */
import { StanzaError } from '../errors.ts';
import type { AccessModel, NodeConfig, SendLastPublished } from '../storage/pep-store.ts';
import { Element, NS, x } from '../xml/element.ts';

export const PUBSUB = NS.PUBSUB;
export const PUBSUB_OWNER = `${PUBSUB}#owner`;
export const PUBSUB_EVENT = `${PUBSUB}#event`;
export const PUBSUB_ERRORS = `${PUBSUB}#errors`;
export const NODE_CONFIG = `${PUBSUB}#node_config`;
export const PUBLISH_OPTIONS = `${PUBSUB}#publish-options`;

/** The largest pubsub#max_items; also what 'max' means (XEP-0060 config-node-max). */
export const MAX_ITEMS = 256;

/** XEP-0163 §8: presence access, notifications on, last item on presence; one persistent item. */
export const DEFAULT_CONFIG: NodeConfig = {
  accessModel: 'presence',
  rosterGroups: [],
  persistItems: true,
  maxItems: 1,
  sendLastPublishedItem: 'on_sub_and_presence',
  deliverNotifications: true,
  deliverPayloads: true,
  notifyRetract: true,
  notifyDelete: true,
};

const ACCESS_MODELS: AccessModel[] = ['open', 'presence', 'roster', 'whitelist'];
const SEND_LAST: SendLastPublished[] = ['never', 'on_sub', 'on_sub_and_presence'];

/** A pubsub error: the stanza condition plus an application condition in pubsub#errors. */
export function pubsubError(condition: string, pubsubCondition?: string, text?: string, feature?: string): StanzaError {
  return new StanzaError(condition, text, undefined, pubsubCondition ? x(pubsubCondition, { xmlns: PUBSUB_ERRORS, feature }) : undefined);
}

export const unsupported = (feature: string) => pubsubError('feature-not-implemented', 'unsupported', undefined, feature);

/** The submitted fields of the first jabber:x:data child (FORM_TYPE left out). */
export function formFields(parent: Element | undefined): { type?: string; fields: Map<string, string[]> } | undefined {
  const form = parent?.getChild('x', NS.DATA_FORMS);
  if (!form) return undefined;
  const fields = new Map<string, string[]>();
  for (const field of form.getChildren('field')) {
    if (!field.attrs.var || field.attrs.var === 'FORM_TYPE') continue;
    fields.set(field.attrs.var, field.getChildren('value').map((v) => v.getText()));
  }
  return { type: form.attrs.type, fields };
}

function boolean(values: string[]): boolean {
  const v = values[0];
  if (v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  throw new Error(`not a boolean: "${v ?? ''}"`);
}

function single<T extends string>(values: string[], allowed: readonly T[]): T {
  const v = values[0] as T;
  if (!allowed.includes(v)) throw new Error(`"${v ?? ''}" is not one of ${allowed.join(', ')}`);
  return v;
}

function maxItems(values: string[]): number {
  const v = values[0] ?? '';
  if (v === 'max') return MAX_ITEMS;
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > MAX_ITEMS) throw new Error(`max_items must be 1–${MAX_ITEMS} or "max"`);
  return Number(v);
}

type Setter = (config: NodeConfig, values: string[]) => void;

/** The fields we implement, how they set a config, and how a config reads back (for forms and preconditions). */
const FIELDS: Record<string, { set: Setter; get: (c: NodeConfig) => string[]; form: Omit<FieldSpec, 'var' | 'values'> }> = {
  'pubsub#title': {
    set: (c, v) => (c.title = v[0] || undefined),
    get: (c) => (c.title ? [c.title] : []),
    form: { type: 'text-single', label: 'A friendly name for the node' },
  },
  'pubsub#access_model': {
    set: (c, v) => (c.accessModel = single(v, ACCESS_MODELS)),
    get: (c) => [c.accessModel],
    form: { type: 'list-single', label: 'Who may subscribe and retrieve items', options: ACCESS_MODELS },
  },
  'pubsub#roster_groups_allowed': {
    set: (c, v) => (c.rosterGroups = [...new Set(v)].sort()),
    get: (c) => [...c.rosterGroups].sort(),
    form: { type: 'list-multi', label: 'Roster groups allowed to subscribe (roster access model)' },
  },
  'pubsub#persist_items': {
    set: (c, v) => (c.persistItems = boolean(v)),
    get: (c) => [String(c.persistItems)],
    form: { type: 'boolean', label: 'Persist items to storage' },
  },
  'pubsub#max_items': {
    set: (c, v) => (c.maxItems = maxItems(v)),
    get: (c) => [String(c.maxItems)],
    form: { type: 'text-single', label: `Max number of items to persist (1–${MAX_ITEMS} or max)` },
  },
  'pubsub#send_last_published_item': {
    set: (c, v) => (c.sendLastPublishedItem = single(v, SEND_LAST)),
    get: (c) => [c.sendLastPublishedItem],
    form: { type: 'list-single', label: 'When to send the last published item', options: SEND_LAST },
  },
  'pubsub#deliver_notifications': {
    set: (c, v) => (c.deliverNotifications = boolean(v)),
    get: (c) => [String(c.deliverNotifications)],
    form: { type: 'boolean', label: 'Deliver event notifications' },
  },
  'pubsub#deliver_payloads': {
    set: (c, v) => (c.deliverPayloads = boolean(v)),
    get: (c) => [String(c.deliverPayloads)],
    form: { type: 'boolean', label: 'Deliver payloads with event notifications' },
  },
  'pubsub#notify_retract': {
    set: (c, v) => (c.notifyRetract = boolean(v)),
    get: (c) => [String(c.notifyRetract)],
    form: { type: 'boolean', label: 'Notify subscribers when items are removed from the node' },
  },
  'pubsub#notify_delete': {
    set: (c, v) => (c.notifyDelete = boolean(v)),
    get: (c) => [String(c.notifyDelete)],
    form: { type: 'boolean', label: 'Notify subscribers when the node is deleted' },
  },
  // Only the owner publishes to a PEP node; the field exists so clients can check it.
  'pubsub#publish_model': {
    set: (_c, v) => single(v, ['publishers']),
    get: () => ['publishers'],
    form: { type: 'list-single', label: 'Who may publish', options: ['publishers'] },
  },
};

interface FieldSpec {
  var: string;
  type: string;
  label: string;
  values: string[];
  options?: readonly string[];
}

/**
 * Applies submitted fields to a copy of `base`. Throws StanzaError: not-acceptable for unknown
 * fields or bad values (configure, create), or, with `precondition`, conflict/precondition-not-met.
 */
export function applyConfig(base: NodeConfig, fields: Map<string, string[]>, precondition = false): NodeConfig {
  const config: NodeConfig = { ...base, rosterGroups: [...base.rosterGroups] };
  const fail = (text: string) =>
    precondition ? pubsubError('conflict', 'precondition-not-met', text) : new StanzaError('not-acceptable', text);
  for (const [name, values] of fields) {
    const field = FIELDS[name];
    if (!field) throw fail(`${name} is not supported`);
    try {
      field.set(config, values);
    } catch (err) {
      throw fail(`${name}: ${(err as Error).message}`);
    }
  }
  return config;
}

/** Publish-options against an existing node: every submitted field must match its configuration. */
export function checkPreconditions(config: NodeConfig, fields: Map<string, string[]>): void {
  const wanted = applyConfig(config, fields, true);
  for (const name of fields.keys()) {
    const field = FIELDS[name]!;
    if (JSON.stringify(field.get(wanted)) !== JSON.stringify(field.get(config))) {
      throw pubsubError('conflict', 'precondition-not-met', `${name} is ${field.get(config).join(' ') || 'unset'} on this node`);
    }
  }
}

/** The pubsub#node_config form describing `config`. */
export function configForm(config: NodeConfig, type: 'form' | 'result' = 'form'): Element {
  return x(
    'x',
    { xmlns: NS.DATA_FORMS, type },
    x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', {}, NODE_CONFIG)),
    ...Object.entries(FIELDS).map(([name, field]) =>
      x(
        'field',
        { var: name, type: field.form.type, label: field.form.label },
        ...field.get(config).map((v) => x('value', {}, v)),
        ...(field.form.options ?? []).map((o) => x('option', {}, x('value', {}, o))),
      ),
    ),
  );
}
