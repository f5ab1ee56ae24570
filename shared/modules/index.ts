/** The feature modules a server runs, in registration order. Remove one here to drop a feature. */
import type { XmppModule } from '../core/registry.ts';
import { carbonsModule } from './carbons.ts';
import { discoModule } from './disco.ts';
import { mamModule } from './mam.ts';
import { messageModule } from './message.ts';
import { mucModule } from './muc.ts';
import { offlineModule } from './offline.ts';
import { pingModule } from './ping.ts';
import { presenceModule } from './presence.ts';
import { registerModule } from './register.ts';
import { invitesModule } from './invites.ts';
import { rosterModule } from './roster.ts';
import { versionModule } from './version.ts';
import { pepModule } from './pep.ts';
import { privateModule } from './private.ts';
import { vcardModule } from './vcard.ts';
import { blockingModule } from './blocking.ts';
import { uploadModule } from './upload.ts';
import { csiModule } from './csi.ts';
import { pushModule } from './push.ts';
import { externalServicesModule } from './external-services.ts';
import { adminCommandsModule } from './admin-commands.ts';

export const defaultModules: XmppModule[] = [
  discoModule,
  rosterModule,
  presenceModule,
  messageModule,
  offlineModule,
  pingModule,
  versionModule,
  registerModule,
  invitesModule,
  mamModule,
  carbonsModule,
  mucModule,
  pepModule,
  privateModule,
  vcardModule,
  blockingModule,
  uploadModule,
  csiModule,
  pushModule,
  externalServicesModule,
  adminCommandsModule,
];
