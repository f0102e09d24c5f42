/**
 * An SVG timeline of a migration: transfer rate over time (from the query-migrate
 * samples), the bytes still to send, and the stop-and-copy downtime at the end.
 */
import type { MigrationReport } from './migrate.js';

const escape = (text: string): string => text.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);

export function migrationSvg(report: MigrationReport, title = 'xmig migration'): string {
  const width = 720;
  const height = 260;
  const left = 56;
  const right = 16;
  const top = 34;
  const bottom = 36;
  const samples = report.samples.length > 0 ? report.samples : [{ t: 0, mbps: 0, remaining: 0, total: 0, transferred: 0, status: 'none', dirtySyncCount: 0 }];
  const tMax = Math.max(report.elapsedMs, report.totalTimeMs ?? 0, samples[samples.length - 1]!.t, 1);
  const rateMax = Math.max(1, ...samples.map((s) => s.mbps));
  const remainingMax = Math.max(1, ...samples.map((s) => s.remaining));
  const x = (t: number): number => left + ((width - left - right) * t) / tMax;
  const y = (v: number, max: number): number => top + (height - top - bottom) * (1 - v / max);
  const rate = samples.map((s) => `${x(s.t).toFixed(1)},${y(s.mbps, rateMax).toFixed(1)}`).join(' ');
  const remaining = samples.map((s) => `${x(s.t).toFixed(1)},${y(s.remaining, remainingMax).toFixed(1)}`).join(' ');
  const downtime = report.downtimeMs ?? 0;
  const end = report.totalTimeMs ?? tMax;
  const summary = `${report.transport}: ${report.status}, total ${report.totalTimeMs ?? '-'} ms, downtime ${report.downtimeMs ?? '-'} ms, ${((report.bytes ?? 0) / 1e6).toFixed(1)} MB`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">
  <title>${escape(title)}</title>
  <rect width="100%" height="100%" fill="white"/>
  <text x="${left}" y="16" font-size="13">${escape(title)}</text>
  <text x="${left}" y="29" fill="#555">${escape(summary)}</text>
  <line x1="${left}" y1="${height - bottom}" x2="${width - right}" y2="${height - bottom}" stroke="#333"/>
  <line x1="${left}" y1="${top}" x2="${left}" y2="${height - bottom}" stroke="#333"/>
  <text x="${left - 6}" y="${top + 4}" text-anchor="end">${rateMax.toFixed(0)}</text>
  <text x="${left - 6}" y="${height - bottom}" text-anchor="end">0</text>
  <text x="${width - right}" y="${height - 8}" text-anchor="end">${tMax} ms</text>
  <text x="${left}" y="${height - 8}">0</text>
  <rect x="${x(end - downtime).toFixed(1)}" y="${top}" width="${Math.max(1, x(end) - x(end - downtime)).toFixed(1)}" height="${height - top - bottom}" fill="#f4c7c3"><title>downtime ${downtime} ms</title></rect>
  <polyline points="${remaining}" fill="none" stroke="#9e9e9e" stroke-dasharray="4 3"><title>bytes remaining</title></polyline>
  <polyline points="${rate}" fill="none" stroke="#1a73e8" stroke-width="2"><title>throughput (Mbit/s)</title></polyline>
  <text x="${width - right}" y="${top + 10}" text-anchor="end" fill="#1a73e8">Mbit/s</text>
  <text x="${width - right}" y="${top + 24}" text-anchor="end" fill="#9e9e9e">remaining</text>
  <text x="${width - right}" y="${top + 38}" text-anchor="end" fill="#c5221f">downtime</text>
</svg>
`;
}
