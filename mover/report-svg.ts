/**
 * An SVG timeline of a migration, to look at rather than read: the transfer rate
 * measured between samples (MiB/s, left axis), the RAM still to send (MiB, right axis),
 * QEMU's passes over RAM, the stop-and-copy downtime, ping gaps when the caller has
 * them (the lab does), and how it ended — a cancel or a forced switchover is drawn
 * where it happened, and a run that did not complete says so in its colour. A full
 * migration adds the disk: its phases as a band along the top (mirror sync, ready,
 * RAM, switchover, complete) and the rate of NBD bytes on the tunnel as its own curve.
 */
import type { MigrationReport } from './migrate.js';

const escape = (text: string): string => text.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
const MIB = 1024 * 1024;

export interface TimelineExtras {
  /** Spans (ms after the migration was issued) in which pings went unanswered. */
  pingGaps?: Array<{ startMs: number; endMs: number }>;
}

/** 1, 2 or 5 times a power of ten: a tick step giving about `count` ticks over `max`. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw) ?? raw;
}

const STATUS_COLOUR: Record<MigrationReport['status'], string> = { completed: '#188038', failed: '#c5221f', cancelled: '#e37400' };
const PHASE_COLOUR: Record<string, string> = { 'mirror-sync': '#a8dab5', ready: '#fde293', ram: '#aecbfa', switchover: '#f28b82', complete: '#d7aefb' };

export function migrationSvg(report: MigrationReport, title = 'xmig migration', extras: TimelineExtras = {}): string {
  const width = 760;
  const height = 300;
  const left = 60;
  const right = 64;
  const top = 46;
  const bottom = 44;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const samples = report.samples;
  const disk = report.disk;
  const diskSamples = disk?.samples ?? [];
  const tMax = Math.max(report.elapsedMs, report.totalTimeMs ?? 0, samples[samples.length - 1]?.t ?? 0, diskSamples[diskSamples.length - 1]?.t ?? 0, ...(disk?.phases ?? []).map((p) => p.endMs ?? p.startMs), 1);
  const rateMax = Math.max(1, ...samples.map((s) => s.rateBytesPerSecond / MIB), ...diskSamples.map((s) => s.rateBytesPerSecond / MIB));
  const remainingMax = Math.max(1, ...samples.map((s) => s.remaining / MIB));
  const x = (t: number): number => left + (plotW * Math.min(Math.max(t, 0), tMax)) / tMax;
  const y = (v: number, max: number): number => top + plotH * (1 - v / max);
  const parts: string[] = [];

  // Axes, ticks and their units.
  const tStep = niceStep(tMax / 1000, 6);
  for (let s = 0; s <= tMax / 1000 + 1e-9; s += tStep) {
    const px = x(s * 1000).toFixed(1);
    parts.push(`<line x1="${px}" y1="${top}" x2="${px}" y2="${height - bottom}" stroke="#eee"/>`, `<text x="${px}" y="${height - bottom + 14}" text-anchor="middle">${+s.toFixed(3)}</text>`);
  }
  const rStep = niceStep(rateMax, 4);
  for (let v = 0; v <= rateMax + 1e-9; v += rStep) parts.push(`<text x="${left - 6}" y="${(y(v, rateMax) + 4).toFixed(1)}" text-anchor="end" fill="#1a73e8">${+v.toFixed(2)}</text>`);
  const mStep = niceStep(remainingMax, 4);
  for (let v = 0; v <= remainingMax + 1e-9; v += mStep) parts.push(`<text x="${width - right + 6}" y="${(y(v, remainingMax) + 4).toFixed(1)}" fill="#777">${+v.toFixed(1)}</text>`);
  parts.push(
    `<line x1="${left}" y1="${height - bottom}" x2="${width - right}" y2="${height - bottom}" stroke="#333"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${height - bottom}" stroke="#333"/>`,
    `<line x1="${width - right}" y1="${top}" x2="${width - right}" y2="${height - bottom}" stroke="#bbb"/>`,
    `<text x="${left + plotW / 2}" y="${height - 10}" text-anchor="middle">time since migrate (s)</text>`,
    `<text transform="translate(14 ${top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#1a73e8">transfer rate (MiB/s)</text>`,
    `<text transform="translate(${width - 12} ${top + plotH / 2}) rotate(90)" text-anchor="middle" fill="#777">RAM still to send (MiB)</text>`,
  );

  // Ping gaps along the bottom, the downtime band, pass boundaries.
  for (const gap of extras.pingGaps ?? []) {
    parts.push(`<rect x="${x(gap.startMs).toFixed(1)}" y="${height - bottom - 8}" width="${Math.max(1, x(gap.endMs) - x(gap.startMs)).toFixed(1)}" height="8" fill="#5f6368"><title>no ping answered for ${gap.endMs - gap.startMs} ms</title></rect>`);
  }
  const downtime = report.downtimeMs ?? 0;
  if (downtime > 0) {
    const stopAt = report.sourceStoppedAt !== undefined ? report.sourceStoppedAt - report.startedAt : (report.totalTimeMs ?? tMax) - downtime;
    parts.push(`<rect x="${x(stopAt).toFixed(1)}" y="${top}" width="${Math.max(1, x(stopAt + downtime) - x(stopAt)).toFixed(1)}" height="${plotH}" fill="#f4c7c3"><title>downtime ${downtime} ms</title></rect>`);
  }
  for (let i = 1; i < samples.length; i++) {
    if (samples[i]!.passes > samples[i - 1]!.passes && samples[i]!.passes > 1) {
      const px = x(samples[i]!.t).toFixed(1);
      parts.push(`<line x1="${px}" y1="${top}" x2="${px}" y2="${height - bottom}" stroke="#9aa0a6" stroke-dasharray="2 3"/>`, `<text x="${px}" y="${top - 4}" text-anchor="middle" fill="#5f6368">pass ${samples[i]!.passes}</text>`);
    }
  }

  // The disk's phases along the top, and its tunnel rate.
  for (const phase of disk?.phases ?? []) {
    const from = x(phase.startMs);
    const to = x(phase.endMs ?? tMax);
    const ms = (phase.endMs ?? tMax) - phase.startMs;
    parts.push(`<rect x="${from.toFixed(1)}" y="${top + 2}" width="${Math.max(1, to - from).toFixed(1)}" height="8" fill="${PHASE_COLOUR[phase.phase] ?? '#ccc'}"><title>disk ${phase.phase}: ${ms} ms</title></rect>`);
    if (to - from > 40) parts.push(`<text x="${((from + to) / 2).toFixed(1)}" y="${top + 22}" text-anchor="middle" fill="#5f6368">${escape(phase.phase)}</text>`);
  }
  if (diskSamples.length > 0) {
    const rate = diskSamples.map((s) => `${x(s.t).toFixed(1)},${y(s.rateBytesPerSecond / MIB, rateMax).toFixed(1)}`).join(' ');
    parts.push(`<polyline points="${rate}" fill="none" stroke="#188038" stroke-width="2"><title>disk: NBD bytes on the tunnel (MiB/s)</title></polyline>`);
  }

  // The curves.
  if (samples.length > 0) {
    const remaining = samples.map((s) => `${x(s.t).toFixed(1)},${y(s.remaining / MIB, remainingMax).toFixed(1)}`).join(' ');
    const rate = samples.map((s) => `${x(s.t).toFixed(1)},${y(s.rateBytesPerSecond / MIB, rateMax).toFixed(1)}`).join(' ');
    parts.push(
      `<polyline points="${remaining}" fill="none" stroke="#9e9e9e" stroke-dasharray="5 3"><title>RAM still to send (MiB)</title></polyline>`,
      `<polyline points="${rate}" fill="none" stroke="#1a73e8" stroke-width="2"><title>measured transfer rate (MiB/s)</title></polyline>`,
    );
  }

  // How it ended.
  const marks: Array<[number | undefined, string, string]> = [
    [report.forcedSwitchoverAtMs, '#8430ce', 'switchover forced'],
    [report.cancelledAtMs, '#e37400', `cancelled (${report.cancelReason ?? 'signal'})`],
  ];
  for (const [at, colour, label] of marks) {
    if (at === undefined) continue;
    const px = x(at).toFixed(1);
    parts.push(`<line x1="${px}" y1="${top}" x2="${px}" y2="${height - bottom}" stroke="${colour}" stroke-width="2"/>`, `<text x="${px}" y="${top + 12}" fill="${colour}" text-anchor="end" dx="-3">${escape(label)}</text>`);
  }

  const mib = (bytes: number | undefined): string => (bytes === undefined ? '-' : `${(bytes / MIB).toFixed(1)} MiB`);
  const summary = [
    `${report.transport}: ${report.status}`,
    `total ${report.totalTimeMs ?? '-'} ms`,
    `downtime ${report.downtimeMs ?? '-'} ms`,
    `${mib(report.bytes)} sent`,
    `${report.passes ?? '-'} passes`,
    ...(disk ? [`disk ${mib(disk.mirroredBytes)} mirrored, ${mib(disk.wire.toTarget)} on the wire`] : []),
    ...(report.error ? [report.error] : []),
  ].join(' · ');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">
  <title>${escape(title)}</title>
  <rect width="100%" height="100%" fill="white"/>
  <text x="${left}" y="16" font-size="13">${escape(title)}</text>
  <text x="${left}" y="31" fill="${STATUS_COLOUR[report.status]}">${escape(summary)}</text>
  ${parts.join('\n  ')}
</svg>
`;
}
