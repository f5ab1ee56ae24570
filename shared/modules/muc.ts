/**
 * XEP-0045 Multi-User Chat on `conference.<domain>` (XMPP_MUC_DOMAIN), served through the core's
 * host() registration; the rooms and their archives are in shared/modules/muc/. Occupants leave
 * their rooms when their session ends or when they send unavailable broadcast presence.
 */
import type { XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import { MucService } from './muc/service.ts';
import { ROOM_FANOUT_JOB, isRoomFanoutJob, runRoomFanout } from './muc/fanout-jobs.ts';
import { log } from '../log.ts';

const services = new WeakMap<ModuleServer, MucService>();

function serviceFor(server: ModuleServer, domain: string): MucService {
  let service = services.get(server);
  if (!service) services.set(server, (service = new MucService(server, domain)));
  return service;
}

export const mucModule: XmppModule = {
  name: 'muc',
  setup(reg) {
    const domain = reg.config.mucDomain ?? `conference.${reg.config.domain}`;
    reg.host(domain, (event) => serviceFor(event.server, domain).handle(event), { name: 'Chatrooms', category: 'conference', type: 'text' });
    // A replaced session's rooms wait for its connection's end: its queued room messages still
    // come from an occupant, and the new session on the same full JID takes the occupancy over.
    reg.onSession('session/ended', async ({ server, session, replaced }) => {
      if (!replaced) await serviceFor(server, domain).sessionEnded(session);
    });
    reg.onSession('session/released', ({ server, session }) => serviceFor(server, domain).sessionEnded(session));
    // Big rooms' copies, queued by the sender's frame (docs/muc-fanout.md).
    reg.job(ROOM_FANOUT_JOB, async ({ server, job }) => {
      if (isRoomFanoutJob(job)) await runRoomFanout(serviceFor(server, domain), job);
      else log.error('malformed room fan-out job dropped', { room: String(job.room) });
    });
    reg.onAccountRemoval(({ server, bare }) => serviceFor(server, domain).accountRemoved(bare));
    // Unavailable broadcast presence also reaches the rooms the session is in (RFC 6121 §4.6.3).
    reg.hook(
      'presence',
      async ({ server, stanza, to, session }) => {
        if (!to && session && stanza.attrs.type === 'unavailable') await serviceFor(server, domain).sessionEnded(session);
        return false;
      },
      10,
    );
  },
};
