import { Command } from 'commander';

/** `xmig man`: xmig(1) in troff, from the command tree (the package build installs it). */
export function manCommand(): Command {
  return new Command('man')
    .description('print xmig(1), the manual page, generated from the command tree (troff)')
    .action(async () => {
      const { buildProgram } = await import('./program.js');
      const { manPage } = await import('./man-page.js');
      const program = await buildProgram();
      // Reproducible builds set SOURCE_DATE_EPOCH; the page's date follows it.
      const epoch = Number(process.env['SOURCE_DATE_EPOCH']);
      const date = (Number.isFinite(epoch) && epoch > 0 ? new Date(epoch * 1000) : new Date()).toISOString().slice(0, 10);
      process.stdout.write(manPage(program, { version: program.version() ?? '', date }));
    });
}
