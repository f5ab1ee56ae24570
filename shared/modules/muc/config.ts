/**
 * Room configuration (XEP-0045 §10.2, FORM_TYPE muc#roomconfig): defaults, the form an owner is
 * shown, reading a submitted form, and the disco#info features a configuration implies.
 */
import { StanzaError } from '../../errors.ts';
import type { Role, RoomConfig } from '../../storage/muc-store.ts';
import { buildForm, parseBoolean, type FormField, type SubmittedForm } from '../../xml/data-form.ts';
import type { Element } from '../../xml/element.ts';

export const ROOMCONFIG = 'http://jabber.org/protocol/muc#roomconfig';

export function defaultConfig(): RoomConfig {
  return {
    name: '',
    description: '',
    persistent: false,
    public: true,
    membersOnly: false,
    moderated: false,
    passwordProtected: false,
    password: '',
    maxUsers: 0,
    whois: 'moderators',
    changeSubject: false,
    allowInvites: false,
    allowPm: 'anyone',
    presenceBroadcast: ['moderator', 'participant', 'visitor'],
  };
}

const MAX_USERS_OPTIONS = ['10', '20', '30', '50', '100', '1000', '10000', 'none'];
const ROLES: Role[] = ['moderator', 'participant', 'visitor'];

const bool = (v: boolean) => [v ? '1' : '0'];

export function configForm(config: RoomConfig): Element {
  const fields: FormField[] = [
    { var: 'muc#roomconfig_roomname', type: 'text-single', label: 'Name', values: [config.name] },
    { var: 'muc#roomconfig_roomdesc', type: 'text-single', label: 'Description', values: [config.description] },
    { var: 'muc#roomconfig_persistentroom', type: 'boolean', label: 'Keep the room when the last occupant leaves', values: bool(config.persistent) },
    { var: 'muc#roomconfig_publicroom', type: 'boolean', label: 'List the room in the directory', values: bool(config.public) },
    { var: 'muc#roomconfig_membersonly', type: 'boolean', label: 'Only members may enter', values: bool(config.membersOnly) },
    { var: 'muc#roomconfig_moderatedroom', type: 'boolean', label: 'Only participants with voice may speak', values: bool(config.moderated) },
    { var: 'muc#roomconfig_passwordprotectedroom', type: 'boolean', label: 'Require a password to enter', values: bool(config.passwordProtected) },
    { var: 'muc#roomconfig_roomsecret', type: 'text-private', label: 'Password', values: config.password ? [config.password] : [] },
    {
      var: 'muc#roomconfig_maxusers',
      type: 'list-single',
      label: 'Maximum number of occupants',
      values: [config.maxUsers ? String(config.maxUsers) : 'none'],
      options: MAX_USERS_OPTIONS.map((value) => ({ value })),
    },
    {
      var: 'muc#roomconfig_whois',
      type: 'list-single',
      label: 'Who may see real JIDs',
      values: [config.whois],
      options: [
        { label: 'Moderators only', value: 'moderators' },
        { label: 'Anyone', value: 'anyone' },
      ],
    },
    { var: 'muc#roomconfig_changesubject', type: 'boolean', label: 'Participants may change the subject', values: bool(config.changeSubject) },
    { var: 'muc#roomconfig_allowinvites', type: 'boolean', label: 'Participants may invite others', values: bool(config.allowInvites) },
    {
      var: 'muc#roomconfig_allowpm',
      type: 'list-single',
      label: 'Who may send private messages',
      values: [config.allowPm],
      options: ['anyone', 'participants', 'moderators', 'none'].map((value) => ({ value })),
    },
    {
      var: 'muc#roomconfig_presencebroadcast',
      type: 'list-multi',
      label: 'Roles whose presence is broadcast',
      values: config.presenceBroadcast,
      options: ROLES.map((value) => ({ value })),
    },
  ];
  return buildForm('form', ROOMCONFIG, fields, 'Room configuration');
}

function single(form: SubmittedForm, name: string): string | undefined {
  return form.fields.get(name)?.[0];
}

function boolField(form: SubmittedForm, name: string, current: boolean): boolean {
  if (!form.fields.has(name)) return current;
  const value = parseBoolean(single(form, name) ?? '');
  if (value === undefined) throw new StanzaError('not-acceptable', `${name} must be a boolean`);
  return value;
}

/** Applies a submitted muc#roomconfig form to `current`; unknown fields are ignored (XEP-0004). */
export function applyConfigForm(current: RoomConfig, form: SubmittedForm): RoomConfig {
  if (form.formType !== undefined && form.formType !== ROOMCONFIG) throw new StanzaError('bad-request', `FORM_TYPE must be ${ROOMCONFIG}`);
  const next: RoomConfig = { ...current, presenceBroadcast: [...current.presenceBroadcast] };
  if (form.fields.has('muc#roomconfig_roomname')) next.name = (single(form, 'muc#roomconfig_roomname') ?? '').slice(0, 256);
  if (form.fields.has('muc#roomconfig_roomdesc')) next.description = (single(form, 'muc#roomconfig_roomdesc') ?? '').slice(0, 1024);
  next.persistent = boolField(form, 'muc#roomconfig_persistentroom', current.persistent);
  next.public = boolField(form, 'muc#roomconfig_publicroom', current.public);
  next.membersOnly = boolField(form, 'muc#roomconfig_membersonly', current.membersOnly);
  next.moderated = boolField(form, 'muc#roomconfig_moderatedroom', current.moderated);
  next.passwordProtected = boolField(form, 'muc#roomconfig_passwordprotectedroom', current.passwordProtected);
  next.changeSubject = boolField(form, 'muc#roomconfig_changesubject', current.changeSubject);
  next.allowInvites = boolField(form, 'muc#roomconfig_allowinvites', current.allowInvites);
  if (form.fields.has('muc#roomconfig_roomsecret')) next.password = single(form, 'muc#roomconfig_roomsecret') ?? '';
  if (next.passwordProtected && !next.password) throw new StanzaError('not-acceptable', 'a password-protected room needs muc#roomconfig_roomsecret');
  if (!next.passwordProtected) next.password = '';
  if (form.fields.has('muc#roomconfig_maxusers')) {
    const value = (single(form, 'muc#roomconfig_maxusers') ?? '').trim();
    if (value === '' || value === 'none' || value === '0') next.maxUsers = 0;
    else if (/^\d+$/.test(value)) next.maxUsers = Number(value);
    else throw new StanzaError('not-acceptable', 'muc#roomconfig_maxusers must be a number or "none"');
  }
  if (form.fields.has('muc#roomconfig_whois')) {
    const value = single(form, 'muc#roomconfig_whois');
    if (value !== 'moderators' && value !== 'anyone') throw new StanzaError('not-acceptable', 'muc#roomconfig_whois must be "moderators" or "anyone"');
    next.whois = value;
  }
  if (form.fields.has('muc#roomconfig_allowpm')) {
    const value = single(form, 'muc#roomconfig_allowpm');
    if (value !== 'anyone' && value !== 'participants' && value !== 'moderators' && value !== 'none') {
      throw new StanzaError('not-acceptable', 'muc#roomconfig_allowpm must be anyone, participants, moderators or none');
    }
    next.allowPm = value;
  }
  if (form.fields.has('muc#roomconfig_presencebroadcast')) {
    const values = form.fields.get('muc#roomconfig_presencebroadcast')!;
    if (values.some((v) => !(ROLES as string[]).includes(v))) throw new StanzaError('not-acceptable', 'muc#roomconfig_presencebroadcast takes moderator, participant and visitor');
    next.presenceBroadcast = [...new Set(values)] as Role[];
  }
  return next;
}

/** The muc_* disco#info features of a room with this configuration (XEP-0045 §6.4). */
export function configFeatures(config: RoomConfig): string[] {
  return [
    config.persistent ? 'muc_persistent' : 'muc_temporary',
    config.public ? 'muc_public' : 'muc_hidden',
    config.membersOnly ? 'muc_membersonly' : 'muc_open',
    config.moderated ? 'muc_moderated' : 'muc_unmoderated',
    config.passwordProtected ? 'muc_passwordprotected' : 'muc_unsecured',
    config.whois === 'anyone' ? 'muc_nonanonymous' : 'muc_semianonymous',
  ];
}
