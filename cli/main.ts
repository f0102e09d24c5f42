// Entry point of the `xmig` executable (bin/xmig.js loads this).
import { runCli } from './program.js';

process.exitCode = await runCli(process.argv.slice(2));
