# The XMPP federation service (server-to-server, XEP-0114 components), for Fargate on ARM64.
#
# Build context: the repository root, reduced by the CDK asset to package.json, package-lock.json,
# tsconfig.json, shared/, federation/ and this file (see FEDERATION_IMAGE_CONTEXT in
# cdk/lib/federation.ts). `cdk deploy` builds it with `--platform linux/arm64`; only that step needs
# Docker (synth does not).
#
# The TypeScript is bundled with esbuild into one ESM file, in a build stage that runs on the build
# machine's own architecture (the output is plain JavaScript), so cross-building from x86 needs no
# emulation for the build step.

FROM --platform=$BUILDPLATFORM public.ecr.aws/docker/library/node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Runtime dependencies only (esbuild is one); no install scripts (nothing here needs them).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY shared ./shared
COPY federation ./federation
RUN npx esbuild federation/main.ts \
      --bundle --platform=node --target=node22 --format=esm \
      --main-fields=module,main \
      --banner:js="import { createRequire as __xmppCreateRequire } from 'node:module'; const require = __xmppCreateRequire(import.meta.url);" \
      --minify --sourcemap --sources-content=false --legal-comments=none \
      --outfile=/out/federation.mjs

FROM public.ecr.aws/docker/library/node:22-bookworm-slim
ENV NODE_ENV=production \
    NODE_OPTIONS=--enable-source-maps \
    XMPP_BIND=0.0.0.0
WORKDIR /app
COPY --from=build /out/ ./
USER node
EXPOSE 5269 5270 5347
CMD ["node", "federation.mjs"]
