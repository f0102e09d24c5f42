import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XmigError } from '../../shared/errors.js';
import { parseLdd } from './ldd.js';

/** ldd /usr/bin/node on Debian 12 (Node.js 20). */
const NODE_LDD = `	linux-vdso.so.1 (0x00007f5bd0de5000)
	libdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f5bd0dcf000)
	libstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f5bd0a00000)
	libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f5bd0cef000)
	libgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f5bd0ccf000)
	libpthread.so.0 => /lib/x86_64-linux-gnu/libpthread.so.0 (0x00007f5bd0cca000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5bd081e000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f5bd0de7000)
`;

describe('ldd output', () => {
  it("gives node's libraries at ldd's paths and the loader, without the vdso", () => {
    expect(parseLdd(NODE_LDD)).toEqual({
      libraries: ['libdl.so.2', 'libstdc++.so.6', 'libm.so.6', 'libgcc_s.so.1', 'libpthread.so.0', 'libc.so.6'].map((l) => `/lib/x86_64-linux-gnu/${l}`),
      loader: '/lib64/ld-linux-x86-64.so.2',
    });
  });

  it('reads a static binary as needing nothing, and refuses a library that is not found', () => {
    expect(parseLdd('\tnot a dynamic executable\n')).toEqual({ libraries: [], loader: undefined });
    expect(parseLdd('\tstatically linked\n')).toEqual({ libraries: [], loader: undefined });
    expect(() => parseLdd('\tlibfoo.so.1 => not found\n')).toThrow(/libfoo\.so\.1 not found/);
    expect(() => parseLdd('ldd: warning: something odd\n')).toThrow(XmigError);
  });

  it('never throws anything but a typed error', () => {
    const line = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.tuple(fc.stringMatching(/^[a-z+.0-9]{1,12}$/), fc.stringMatching(/^\/[a-z/.0-9]{0,30}$/)).map(([n, p]) => `\t${n} => ${p} (0x1000)`),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 10 }), (lines) => {
        try {
          const parsed = parseLdd(lines.join('\n'));
          for (const library of parsed.libraries) expect(library.startsWith('/')).toBe(true);
        } catch (error) {
          expect(error).toBeInstanceOf(XmigError);
        }
      }),
    );
  });
});
