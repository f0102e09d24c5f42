#!/usr/bin/env -S node --initial-old-space-size=64
// The `xmig` command. A git checkout runs the TypeScript sources through tsx, so
// development needs no build step; an installed package (no sources, only dist/)
// runs the compiled output.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
const source = new URL('cli/main.ts', root);

async function loadTsx() {
  try {
    return await import('tsx/esm/api');
  } catch {
    return undefined;
  }
}

const tsx = existsSync(fileURLToPath(source)) ? await loadTsx() : undefined;
if (tsx) {
  tsx.register();
  await import(source.href);
} else {
  await import(new URL('dist/cli/main.js', root).href);
}
