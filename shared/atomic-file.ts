import { renameSync, writeFileSync } from 'node:fs';

/**
 * Writes `file` whole or not at all: into a temporary file beside it, then renamed over it,
 * so a reader polling for it (xmig migrate for `xmig send --stats`, `xmig status` for a
 * migration's status) never reads half of it.
 */
export function writeFileAtomic(file: string, data: string, mode = 0o644): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, data, { mode });
  renameSync(temporary, file);
}
