/**
 * The shared libraries a binary needs, from ldd(1)'s output, so the guest's initramfs
 * holds the host's Node.js and exactly what it links against. Lines look like
 *
 *     linux-vdso.so.1 (0x00007ffd...)                         (in the kernel: skipped)
 *     libstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x...)
 *     /lib64/ld-linux-x86-64.so.2 (0x...)                     (the dynamic loader)
 *     libfoo.so.1 => not found                                (refused: the guest would not start)
 *
 * Each library goes into the image at the path ldd names (the loader's search path on the
 * host is the guest's too), and the loader at the path the binary's PT_INTERP names.
 */
import { XmigError } from '../../shared/errors.js';

export interface SharedLibraries {
  /** Absolute paths, in ldd's order. */
  libraries: string[];
  /** The dynamic loader's absolute path; undefined for a static binary. */
  loader: string | undefined;
}

/** Parses ldd's output; ERR_STATE for a library that is not found, ERR_MESSAGE_MALFORMED for a line it cannot read. */
export function parseLdd(output: string): SharedLibraries {
  const libraries: string[] = [];
  let loader: string | undefined;
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '' || /^(statically linked|not a dynamic executable)$/.test(line)) continue;
    const arrow = /^(\S+) => (.*)$/.exec(line);
    if (arrow) {
      const target = arrow[2]!.trim();
      if (target === 'not found') throw new XmigError('ERR_STATE', `ldd: ${arrow[1]} not found on this machine`);
      const path = /^(\/\S+)(?: \(0x[0-9a-f]+\))?$/.exec(target);
      if (!path) {
        // "libx.so => (0x...)": a library the kernel provides (old glibc's vdso line).
        if (/^\(0x[0-9a-f]+\)$/.test(target)) continue;
        throw new XmigError('ERR_MESSAGE_MALFORMED', `ldd: cannot read "${line.slice(0, 120)}"`);
      }
      libraries.push(path[1]!);
      continue;
    }
    const bare = /^(\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (!bare) throw new XmigError('ERR_MESSAGE_MALFORMED', `ldd: cannot read "${line.slice(0, 120)}"`);
    // An absolute path without "=>" is the loader; a bare name is the vdso.
    if (bare[1]!.startsWith('/')) loader = bare[1]!;
  }
  return { libraries, loader };
}
