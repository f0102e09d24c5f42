/**
 * A set of integers kept as sorted, disjoint, half-open ranges [start, end): the
 * packet numbers a receiver has seen (for ACK frames) and the stream bytes that
 * have arrived or been acknowledged. Inserting is O(ranges); in practice there are
 * few, because ranges merge as gaps fill.
 */
export class RangeSet {
  /** Sorted disjoint ranges as [start, end). */
  private ranges: Array<[number, number]> = [];

  add(start: number, end: number): void {
    if (end <= start) return;
    const ranges = this.ranges;
    // Fast path: appending at or after the last range (in-order arrival).
    const last = ranges[ranges.length - 1];
    if (!last || start > last[1]) {
      ranges.push([start, end]);
      return;
    }
    if (start >= last[0]) {
      if (end > last[1]) last[1] = end;
      return;
    }
    let i = 0;
    while (i < ranges.length && ranges[i]![1] < start) i++;
    let j = i;
    let newStart = start;
    let newEnd = end;
    while (j < ranges.length && ranges[j]![0] <= end) {
      newStart = Math.min(newStart, ranges[j]![0]);
      newEnd = Math.max(newEnd, ranges[j]![1]);
      j++;
    }
    ranges.splice(i, j - i, [newStart, newEnd]);
  }

  has(value: number): boolean {
    for (let i = this.ranges.length - 1; i >= 0; i--) {
      const [start, end] = this.ranges[i]!;
      if (value >= end) return false;
      if (value >= start) return true;
    }
    return false;
  }

  /** True if every integer of [start, end) is in the set. */
  covers(start: number, end: number): boolean {
    for (const [s, e] of this.ranges) if (s <= start && end <= e) return true;
    return end <= start;
  }

  /** The parts of [start, end) not yet in the set. */
  missing(start: number, end: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let cursor = start;
    for (const [s, e] of this.ranges) {
      if (e <= cursor) continue;
      if (s >= end) break;
      if (s > cursor) out.push([cursor, Math.min(s, end)]);
      cursor = Math.max(cursor, e);
      if (cursor >= end) break;
    }
    if (cursor < end) out.push([cursor, end]);
    return out;
  }

  /** End of the range that starts at or below `from` and contains it (the contiguous prefix). */
  contiguousEnd(from: number): number {
    for (const [s, e] of this.ranges) if (s <= from && from < e) return e;
    return from;
  }

  /** Drops everything below `value` (kept memory bounded). */
  forgetBelow(value: number): void {
    while (this.ranges.length > 0 && this.ranges[0]![1] <= value) this.ranges.shift();
    if (this.ranges.length > 0 && this.ranges[0]![0] < value) this.ranges[0]![0] = value;
  }

  get max(): number | undefined {
    return this.ranges.length ? this.ranges[this.ranges.length - 1]![1] - 1 : undefined;
  }

  /** Ranges from the highest down (the order ACK frames list them in). */
  descending(limit = Infinity): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = this.ranges.length - 1; i >= 0 && out.length < limit; i--) out.push(this.ranges[i]!);
    return out;
  }

  get size(): number {
    return this.ranges.length;
  }
}
