/**
 * The `<stream:features/>` a client is offered: before authentication (SASL, both profiles) and
 * after it (resource binding, XEP-0198, what modules add). Built here for the stream header
 * (stream.ts) and for XEP-0388's `<success/>`, which has no stream restart (sasl2.ts).
 */
import { bindingTypes, offeredMechanisms } from '../sasl/mechanisms.ts';
import { frameChannelBindings } from '../storage/frame-context.ts';
import { NS, x, type Element } from '../xml/element.ts';
import { bind2Feature } from './bind2.ts';
import { fastFeature, fastOffered } from './fast.ts';
import type { ClientSession } from './session.ts';
import { streamManagementFeature } from './stream-management.ts';

export function streamFeatures(session: ClientSession): Element {
  const { server, state } = session;
  const authenticated = state.user !== undefined;
  const features = x('stream:features', { 'xmlns:stream': NS.STREAMS });
  if (authenticated) {
    if (state.stage !== 'bound') {
      features.append(x('bind', { xmlns: NS.BIND }, x('required')));
      features.append(x('session', { xmlns: NS.SESSION }, x('optional')));
    }
    if (server.config.streamManagement && !state.sm) features.append(streamManagementFeature());
  } else {
    const bindings = frameChannelBindings();
    const mechanisms = () => offeredMechanisms(bindings).map((m) => x('mechanism', {}, m));
    features.append(x('mechanisms', { xmlns: NS.SASL }, ...mechanisms()));
    // XEP-0388: the same mechanisms without the stream restart.
    // Inline: XEP-0386 binding, XEP-0198 resumption where a timer can end a window, XEP-0484 tokens.
    if (server.config.sasl2) {
      const resumable = server.config.streamManagement && server.timers !== undefined;
      const inline = x('inline', {}, bind2Feature(server), resumable ? streamManagementFeature() : undefined, fastOffered(server) ? fastFeature() : undefined);
      features.append(x('authentication', { xmlns: NS.SASL2 }, ...mechanisms(), inline));
    }
    // XEP-0440: which channel binding types the -PLUS mechanisms can use here.
    const types = bindingTypes(bindings);
    if (types.length) features.append(x('sasl-channel-binding', { xmlns: NS.SASL_CB }, ...types.map((type) => x('channel-binding', { type }))));
  }
  for (const build of server.streamFeatures[authenticated ? 'post-auth' : 'pre-auth']) {
    const feature = build(server);
    if (feature) features.append(feature);
  }
  features.append(
    x('limits', { xmlns: NS.LIMITS }, x('max-bytes', {}, String(server.config.maxFrameBytes)), x('idle-seconds', {}, String(server.config.idleSeconds))),
  );
  return features;
}
