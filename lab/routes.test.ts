import { describe, expect, it } from 'vitest';
import { describeChange, routeChanges, routeFor, type RouteSnapshot } from './routes.js';

const vm = `HID:${'ab'.repeat(20)}`;
const a = `HID:${'0a'.repeat(20)}`;
const r2 = `HID:${'02'.repeat(20)}`;
const snap = (node: string, routes: Array<[string, number, string]>): RouteSnapshot => ({
  node,
  at: 0,
  tables: { HID: routes.map(([xid, port, nextHop]) => ({ xid, port, nextHop, flags: 0 })) },
});

describe('route changes', () => {
  it('finds what was added, removed and rewritten, and names it in one line', () => {
    const before = snap('R1', [[vm, 0, vm], [a, 0, a]]);
    const after = snap('R1', [[vm, 2, r2], [a, 0, a], [r2, 2, r2]]);
    const changes = routeChanges(before, after);
    expect(changes.map((c) => [c.xid, c.before?.port, c.after?.port])).toEqual([
      [vm, 0, 2],
      [r2, undefined, 2],
    ]);
    expect(describeChange(changes[0]!)).toBe(`R1 HID:abababab…: port 0 via HID:abababab… -> port 2 via HID:02020202…`);
    expect(routeChanges(after, before).find((c) => c.xid === r2)?.after).toBeUndefined();
    expect(routeFor(after, vm.toUpperCase().replace('HID', 'HID'))?.port).toBe(2);
    expect(routeFor(before, r2)).toBeUndefined();
    // Default routes are `-` in every table: the line names the table.
    const defaults = routeChanges({ node: 'vm', at: 0, tables: { AD: [{ xid: '-', port: 0, nextHop: a, flags: 0 }] } }, { node: 'vm', at: 0, tables: { AD: [{ xid: '-', port: 0, nextHop: r2, flags: 0 }] } });
    expect(defaults.map(describeChange)).toEqual([`vm AD default: port 0 via HID:0a0a0a0a… -> port 0 via HID:02020202…`]);
  });
});
