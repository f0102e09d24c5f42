/**
 * `xmig lab`: the paper's experiment on real VMs. `xmig lab image` builds (or finds in its
 * cache) the lab VM's image; lab/image/build-image.ts does the work, this only shows it:
 * a progress bar per phase on a terminal, one plain line per phase otherwise, and the
 * image (human or `--json`) at the end.
 */
import { Command, Option } from 'commander';
import type { BuiltImage, ImageProgress } from '../lab/image/build-image.js';
import { labCleanCommand, labRelayCommand, labRunAction } from './lab-run.js';

const MiB = 1048576;

function phaseLine(p: ImageProgress): string {
  const bytes = p.bytes === undefined ? '' : ` ${(p.bytes / MiB).toFixed(1)} MiB`;
  return `image: ${p.phase.padEnd(7)} ${String(p.ms).padStart(6)} ms${bytes}${p.detail ? `  ${p.detail}` : ''}`;
}

export function formatImage(image: BuiltImage): string {
  return [
    `lab image ${image.hash.slice(0, 16)} (${image.cached ? 'cached' : 'built'})`,
    `  kernel     ${image.kernel} (${image.kernelVersion})`,
    `  initramfs  ${image.initramfs} (${(image.initramfsBytes / MiB).toFixed(1)} MiB ${image.compression}; ${image.files} files, ${(image.imageBytes / MiB).toFixed(1)} MiB unpacked)`,
    `  node ${image.nodeVersion}, xmig ${image.xmigVersion}, modules ${image.modules.join(' ')}`,
  ].join('\n');
}

/** Progress on stderr: a bar per phase on a terminal, a line per finished phase otherwise. */
async function progressReporter(enabled: boolean): Promise<{ report: (p: ImageProgress) => void; stop: () => void }> {
  const tty = enabled && process.stderr.isTTY;
  if (!tty) return { report: (p) => p.state === 'end' && enabled && process.stderr.write(`${phaseLine(p)}\n`), stop: () => undefined };
  const { SingleBar, Presets } = await import('cli-progress');
  let bar: InstanceType<typeof SingleBar> | undefined;
  const stop = (): void => {
    bar?.stop();
    bar = undefined;
  };
  return {
    report: (p) => {
      if (p.state === 'start' || (p.state === 'progress' && !bar && p.totalBytes)) {
        stop();
        if (p.state === 'progress') {
          bar = new SingleBar({ format: `image: ${p.phase.padEnd(7)} |{bar}| {percentage}% {value}/{total} MiB`, stream: process.stderr, hideCursor: true }, Presets.shades_classic);
          bar.start(Math.ceil((p.totalBytes ?? 0) / MiB), 0);
        }
      } else if (p.state === 'progress' && bar) {
        bar.update(Math.floor((p.bytes ?? 0) / MiB));
      } else if (p.state === 'end') {
        stop();
        process.stderr.write(`${phaseLine(p)}\n`);
      }
    },
    stop,
  };
}

export function labCommand(): Command {
  // Options after a subcommand's name are that subcommand's (`lab image --json` is image's).
  const lab = new Command('lab').description("the paper's experiment on real QEMU VMs in network namespaces: run it (as root), or build its image").enablePositionalOptions();
  lab
    .command('image')
    .description("build the lab VM's image (kernel + initramfs with Node.js, xmig and the guest init), cached by content hash")
    .option('--cache-dir <dir>', 'where images are kept (default $XDG_CACHE_HOME/xmig/lab, /var/cache/xmig/lab for root)')
    .option('--kernel <file>', 'the kernel (default: the newest /boot/vmlinuz-* with modules)')
    .addOption(new Option('--compression <kind>', 'initramfs compression (default zstd if installed, else gzip)').choices(['zstd', 'gzip', 'none']))
    .option('--force', 'build even if the cache has the image')
    .option('--json', 'print the image as JSON')
    .option('--no-progress', 'no progress on stderr')
    .action(async (options: { cacheDir?: string; kernel?: string; compression?: 'zstd' | 'gzip' | 'none'; force?: boolean; json?: boolean; progress: boolean }) => {
      const { buildImage } = await import('../lab/image/build-image.js');
      const progress = await progressReporter(options.progress);
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.once('SIGINT', onSignal);
      try {
        const image = await buildImage({
          cacheDir: options.cacheDir,
          kernel: options.kernel,
          compression: options.compression,
          force: options.force,
          onProgress: progress.report,
          signal: stop.signal,
        });
        process.stdout.write(options.json ? `${JSON.stringify(image)}\n` : `${formatImage(image)}\n`);
      } finally {
        progress.stop();
        process.off('SIGINT', onSignal);
      }
    });
  lab.addCommand(labCleanCommand());
  lab.addCommand(labRelayCommand(), { hidden: true });
  return labRunAction(lab);
}
