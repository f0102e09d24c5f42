// Entry point of the `xmig` executable (bin/xmig.js loads this).
import { runCli } from './program.js';

const code = await runCli(process.argv.slice(2));
process.exitCode = code;
// A failed command ends now, whatever it left open: QEMU, systemd and scripts wait
// for the process, not for its sockets. (stdout and stderr are synchronous on
// files and pipes, so nothing written is lost.)
if (code !== 0) process.exit(code);
