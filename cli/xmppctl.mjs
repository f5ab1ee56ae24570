#!/usr/bin/env node
// Entry point for `npx xmppctl`: runs the TypeScript CLI through tsx's loader.
import { register } from 'tsx/esm/api';

// The machine's Node 20 is supported by the SDK until 2027; its notice would only clutter output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
register();
await import('./xmppctl.ts');
