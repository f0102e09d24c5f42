import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { XMIG_NODE_FLAGS } from './node-flags.js';

describe('XMIG_NODE_FLAGS', () => {
  it('are the ones the xmig command line starts Node.js with', () => {
    const shebang = readFileSync(new URL('../bin/xmig.js', import.meta.url), 'utf8').split('\n')[0];
    expect(shebang).toBe(`#!/usr/bin/env -S node ${XMIG_NODE_FLAGS.join(' ')}`);
  });
});
