/**
 * XEP-0004 data forms: reading a submitted form into a field map and building forms to send
 * (room configuration, MAM query fields, extended disco info).
 */
import { Element, NS, x } from './element.ts';

export type FieldType =
  | 'boolean'
  | 'fixed'
  | 'hidden'
  | 'jid-multi'
  | 'jid-single'
  | 'list-multi'
  | 'list-single'
  | 'text-multi'
  | 'text-private'
  | 'text-single';

export interface FormField {
  var: string;
  type?: FieldType;
  label?: string;
  values?: string[];
  options?: { label?: string; value: string }[];
}

export interface SubmittedForm {
  type: string;
  formType?: string;
  /** Field values by var (a field without values maps to []). */
  fields: Map<string, string[]>;
}

/** The first jabber:x:data child of `parent`, parsed; undefined when there is none. */
export function readForm(parent: Element): SubmittedForm | undefined {
  const form = parent.getChild('x', NS.DATA_FORMS);
  if (!form) return undefined;
  const fields = new Map<string, string[]>();
  for (const field of form.getChildren('field')) {
    const name = field.attrs.var;
    if (!name) continue;
    fields.set(
      name,
      field.getChildren('value').map((v) => v.getText()),
    );
  }
  return { type: form.attrs.type ?? 'form', formType: fields.get('FORM_TYPE')?.[0], fields };
}

/** XEP-0004 §3.3: "1"/"true" are true, "0"/"false" false; anything else is not a boolean. */
export function parseBoolean(value: string | undefined): boolean | undefined {
  if (value === '1' || value === 'true') return true;
  if (value === '0' || value === 'false') return false;
  return undefined;
}

export function buildForm(type: 'form' | 'result' | 'submit', formType: string, fields: FormField[], title?: string): Element {
  return x(
    'x',
    { xmlns: NS.DATA_FORMS, type },
    title ? x('title', {}, title) : undefined,
    x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', {}, formType)),
    ...fields.map((f) =>
      x(
        'field',
        { var: f.var, type: f.type, label: f.label },
        ...(f.values ?? []).map((v) => x('value', {}, v)),
        ...(f.options ?? []).map((o) => x('option', { label: o.label }, x('value', {}, o.value))),
      ),
    ),
  );
}
