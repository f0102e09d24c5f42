/**
 * The bytes of a chunk that have arrived, as sorted disjoint half-open ranges. Adding
 * says how many bytes were new, so a duplicate or overlapping fragment is never
 * counted twice. Fragments mostly arrive in order, so the common add extends the
 * last range in O(1).
 */
export class ByteRanges {
  /** Flat [start0, end0, start1, end1, ...], sorted, disjoint, not touching. */
  private bounds: number[] = [];

  /** Adds [start, end); returns how many of those bytes were not there before. */
  add(start: number, end: number): number {
    if (end <= start) return 0;
    const b = this.bounds;
    const n = b.length;
    // In order: at or after the last range.
    if (n === 0 || start > b[n - 1]!) {
      b.push(start, end);
      return end - start;
    }
    if (start >= b[n - 2]!) {
      const added = Math.max(0, end - b[n - 1]!);
      if (added > 0) b[n - 1] = end;
      return added;
    }
    // General case: merge every range that overlaps or touches [start, end).
    let i = 0;
    while (i < n && b[i + 1]! < start) i += 2;
    let j = i;
    let covered = 0;
    let newStart = start;
    let newEnd = end;
    while (j < n && b[j]! <= end) {
      covered += Math.max(0, Math.min(end, b[j + 1]!) - Math.max(start, b[j]!));
      newStart = Math.min(newStart, b[j]!);
      newEnd = Math.max(newEnd, b[j + 1]!);
      j += 2;
    }
    b.splice(i, j - i, newStart, newEnd);
    return end - start - covered;
  }

  /** True if every byte of [start, end) is here. */
  covers(start: number, end: number): boolean {
    if (end <= start) return true;
    const b = this.bounds;
    for (let i = 0; i < b.length; i += 2) {
      if (b[i]! > start) return false;
      if (b[i + 1]! >= end) return true;
      if (b[i + 1]! > start) return false;
    }
    return false;
  }

  /** The parts of [start, end) not here, in order. */
  missing(start: number, end: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let cursor = start;
    const b = this.bounds;
    for (let i = 0; i < b.length && cursor < end; i += 2) {
      const s = b[i]!;
      const e = b[i + 1]!;
      if (e <= cursor) continue;
      if (s >= end) break;
      if (s > cursor) out.push([cursor, s]);
      cursor = Math.max(cursor, e);
    }
    if (cursor < end) out.push([cursor, end]);
    return out;
  }

  /** Is there a hole in [start, at)? (Data beyond a gap arrived: something before it is late or lost.) */
  gapBefore(start: number, at: number): boolean {
    return !this.covers(start, at);
  }

  clear(): void {
    this.bounds = [];
  }

  /** How many disjoint ranges (1 when everything arrived in order). */
  get ranges(): number {
    return this.bounds.length / 2;
  }
}
