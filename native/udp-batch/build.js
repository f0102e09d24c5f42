// Builds the UDP batch addon (udp_batch.c -> build/udp_batch.node) at `npm ci` / `npm install`.
// It needs a C compiler and Node's headers (node_api.h), nothing from the network. It never
// fails the install: without the addon xianet/udp-link.ts sends with node:dgram as before.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, 'build', 'udp_batch.node');
function skip(reason) {
  process.stderr.write(`xmig: UDP batch addon not built (${reason}); xianet sends with node:dgram\n`);
  process.exit(0);
}
if (process.platform !== 'linux') skip(`${process.platform}: UDP_SEGMENT and sendmmsg are Linux`);
if (process.env.XMIG_UDP_BATCH_BUILD === '0') skip('XMIG_UDP_BATCH_BUILD=0');
const candidates = [
  process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
  path.resolve(path.dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);
const include = candidates.find((dir) => existsSync(path.join(dir, 'node_api.h')));
if (!include) skip(`no node_api.h in ${candidates.join(', ')}`);
const cc = process.env.CC || 'cc';
mkdirSync(path.dirname(out), { recursive: true });
const args = ['-O2', '-Wall', '-shared', '-fPIC', `-I${include}`, '-o', out, path.join(here, 'udp_batch.c')];
const result = spawnSync(cc, args, { stdio: ['ignore', 'inherit', 'inherit'], timeout: 120_000 });
if (result.error) skip(`${cc}: ${result.error.message}`);
if (result.status !== 0) skip(`${cc} exited with ${result.status ?? result.signal}`);
process.stderr.write(`xmig: UDP batch addon built: ${path.relative(process.cwd(), out) || out}\n`);
