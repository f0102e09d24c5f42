import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Dag } from './dag.js';
import { AddressError } from './errors.js';
import { Xid, XidType } from './xid.js';

// Test vectors from xia-core api/dagaddr/cpp/test.cpp and the examples in dagaddr.cpp.
const AD_06 = 'AD:0606060606060606060606060606060606060606';
const HID_01 = 'HID:0101010101010101010101010101010101010101';
const CID_02 = 'CID:0202020202020202020202020202020202020202';
const AD_1 = 'AD:1000000000000000000000000000000000000000';
const HID_0 = 'HID:0000000000000000000000000000000000000000';
const SID_NS = 'SID:1110000000000000000000000000000000001113';

describe('DAG text forms (xia-core vectors)', () => {
  it('g7: a plain route expression is a chain', () => {
    const dag = Dag.parse(`RE ${AD_1} ${HID_0} ${SID_NS}`);
    expect(dag.toDagString()).toBe(`DAG 0 - \n${AD_1} 1 - \n${HID_0} 2 - \n${SID_NS}`);
    expect(dag.toRe()).toBe(`RE ${AD_1} ${HID_0} ${SID_NS}`);
  });

  it('g8: a parenthesised path is a fallback to the next intent node', () => {
    const re = `RE ( ${AD_1} ${HID_0} ) ${SID_NS}`;
    const dag = Dag.parse(re);
    expect(dag.entry).toEqual([2, 0]);
    expect(dag.edges).toEqual([[1], [2], []]);
    expect(dag.toDagString()).toBe(`DAG 2 0 - \n${AD_1} 1 - \n${HID_0} 2 - \n${SID_NS}`);
    expect(dag.toRe()).toBe(re);
    expect(Dag.parse(dag.toDagString()).equals(dag)).toBe(true);
  });

  it('g3 = g0 + g1 + g2: CID with AD and AD-HID fallbacks, in the DAG form of dagaddr.cpp', () => {
    const text = `DAG 2 0 - \n${AD_06} 2 1 - \n${HID_01} 2 - \n${CID_02}`;
    const dag = Dag.parse(text);
    expect(dag.sink.toString()).toBe(CID_02);
    expect(dag.entry).toEqual([2, 0]);
    expect(dag.edgesOf(0)).toEqual([2, 1]);
    expect(dag.toDagString()).toBe(text);
    // Two fallbacks leave one node: no route-expression form.
    expect(dag.toRe()).toBeUndefined();
  });

  it('the dagaddr.cpp documentation example parses without its newlines too', () => {
    const text =
      'DAG 2 0 - \nAD:4349445f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f 2 1 - \nHID:4849445f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f 2 - \nSID:534944305f5f5f5f5f5f5f5f5f5f5f5f5f5f5f5f';
    expect(Dag.parse(text.replace(/\n/g, '')).equals(Dag.parse(text))).toBe(true);
  });

  it('g10 and g11: a 4ID written as an IPv4 address equals its hex form', () => {
    const dotted = Dag.parse(`RE ( IP:192.168.0.1 ) ${AD_1} ${HID_0} ${SID_NS}`);
    const hex = Dag.parse(`RE ( IP:4500000000010000fafa000000000000c0a80001 ) ${AD_1} ${HID_0} ${SID_NS}`);
    expect(dotted.equals(hex)).toBe(true);
    expect(dotted.nodes[dotted.entry[1]!]!.type).toBe(XidType.IP);
  });

  it.each([
    ['g12: bogus XID type', `RE QD:1000000000000000000000000000000000000000 ${HID_0} ${SID_NS}`, /unknown principal type "QD"/],
    ['g13: short XID', `RE AD:10000000000000000000000000000000000 ${HID_0} ${SID_NS}`, /exactly 40 hex digits/],
    ['g14: non-hex XID', `RE AD:10000hello0world0qrsxyz00000000000000000 ${HID_0} ${SID_NS}`, /exactly 40 hex digits/],
  ])('%s is rejected with a message saying what is wrong', (_, text, message) => {
    expect(() => Dag.parse(text)).toThrow(message);
    expect(() => Dag.parse(text)).toThrow(AddressError);
  });
});

describe('DAG validity', () => {
  const x = (i: number, type = 'HID'): Xid => Xid.parse(`${type}:${i.toString(16).padStart(40, '0')}`);

  it.each([
    ['junk', 'hello', /neither an "RE ..." nor a "DAG ..."/],
    ['empty RE', 'RE', /no XIDs/],
    ['unclosed fallback', `RE ( ${AD_1} ${SID_NS}`, /unclosed/],
    ['stray )', `RE ${AD_1} ) ${SID_NS}`, /without "\("/],
    ['empty fallback', `RE ( ) ${SID_NS}`, /empty fallback/],
    ['trailing fallback', `RE ${AD_1} ( ${HID_0} )`, /leads to no intent/],
    ['DAG edge out of range', `DAG 5 - \n${SID_NS}`, /edge to node 5/],
    ['DAG edge not a number', `DAG x - \n${SID_NS}`, /edge "x" is not a node index/],
    ['sink with edges', `DAG 0 - \n${SID_NS} 0`, /sink and must have no edges/],
    ['cycle', `DAG 0 - \n${AD_1} 1 - \n${HID_0} 0 - \n${SID_NS}`, /sink|cycle/],
    ['unreachable node', `DAG 1 - \n${AD_1} 1 - \n${SID_NS}`, /cannot be reached/],
    ['entry without edges', `DAG - \n${SID_NS}`, /entry node has no out-edges/],
  ])('rejects %s', (_, text, message) => {
    expect(() => Dag.parse(text)).toThrow(message);
  });

  it('rejects more than four edges and more than twenty nodes', () => {
    const five = [x(1), x(2), x(3), x(4), x(5), x(6, 'SID')];
    expect(() => Dag.create(five, [[5], [5], [5], [5], [5], []], [0, 1, 2, 3, 4])).toThrow(/at most 4/);
    const many = Array.from({ length: 21 }, (_, i) => x(i + 1));
    expect(() => Dag.chain(...many)).toThrow(/at most 20 nodes/);
  });

  it('rejects two sinks and repeated XIDs', () => {
    expect(() => Dag.create([x(1), x(2)], [[], []], [0, 1])).toThrow(/2 sinks/);
    expect(() => Dag.create([x(1), x(1)], [[1], []], [0])).toThrow(/appears twice/);
  });

  it('puts nodes in topological order with the sink last', () => {
    // sink given first: HID -> AD is not how one writes it, but it is a valid DAG.
    const dag = Dag.create([x(9, 'SID'), x(1, 'AD')], [[], [0]], [1]);
    expect(dag.nodes.map((n) => n.typeName)).toEqual(['AD', 'SID']);
    expect(dag.entry).toEqual([0]);
    expect(dag.edges).toEqual([[1], []]);
  });
});

describe('address helpers', () => {
  const ad1 = Xid.parse(AD_1);
  const ad2 = Xid.parse('AD:2000000000000000000000000000000000000000');
  const hid = Xid.parse(HID_0);
  const sid = Xid.parse(SID_NS);

  it('builds AD -> HID -> SID with a fallback from the entry to the HID', () => {
    const dag = Dag.hostAddress(ad1, hid, sid);
    expect(dag.nodes.map((n) => n.toString())).toEqual([AD_1, HID_0, SID_NS]);
    expect(dag.entry).toEqual([0, 1]);
    expect(dag.toDagString()).toBe(`DAG 0 1 - \n${AD_1} 1 - \n${HID_0} 2 - \n${SID_NS}`);
  });

  it('replaces the AD, and only the AD, of an address', () => {
    const moved = Dag.hostAddress(ad1, hid, sid).withAd(ad2);
    expect(moved.nodes.map((n) => n.toString())).toEqual([ad2.toString(), HID_0, SID_NS]);
    expect(moved.entry).toEqual([0, 1]);
    expect(Dag.chain(hid, sid).withAd(ad2).equals(Dag.chain(hid, sid))).toBe(true);
    expect(() => Dag.chain(hid).withAd(hid)).toThrow(/needs an AD/);
  });

  it('appends a SID to a host address', () => {
    expect(Dag.chain(ad1, hid).append(sid).equals(Dag.chain(ad1, hid, sid))).toBe(true);
  });
});

describe('round trips of random DAGs', () => {
  const xidArb = fc
    .tuple(fc.constantFrom(0x10, 0x11, 0x12, 0x13), fc.uint8Array({ minLength: 20, maxLength: 20 }))
    .map(([type, id]) => Xid.of(type, id));

  // A random DAG: node i may point to any later node; the last node is the sink.
  const dagArb = fc
    .uniqueArray(xidArb, { minLength: 1, maxLength: 8, selector: (x) => x.toString() })
    .chain((nodes) =>
      fc
        .tuple(
          ...nodes.map((_, i) =>
            i === nodes.length - 1
              ? fc.constant<number[]>([])
              : fc.uniqueArray(fc.integer({ min: i + 1, max: nodes.length - 1 }), { minLength: 1, maxLength: 4 }),
          ),
          fc.uniqueArray(fc.integer({ min: 0, max: nodes.length - 1 }), { minLength: 1, maxLength: 4 }),
        )
        .map((lists) => ({ nodes, edges: lists.slice(0, -1) as number[][], entry: lists[lists.length - 1] as number[] })),
    );

  it('DAG form and (when there is one) RE form parse back to the same DAG', () => {
    fc.assert(
      fc.property(dagArb, ({ nodes, edges, entry }) => {
        let dag: Dag;
        try {
          dag = Dag.create(nodes, edges, entry);
        } catch (error) {
          // unreachable nodes are expected from random edges; nothing else is
          expect((error as Error).message).toMatch(/cannot be reached/);
          return;
        }
        expect(Dag.parse(dag.toDagString()).equals(dag)).toBe(true);
        const re = dag.toRe();
        if (re !== undefined) expect(Dag.parse(re).equals(dag)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('junk text never escapes as anything but AddressError', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), fc.constantFrom('RE ', 'DAG ', ''), (text, prefix) => {
        try {
          Dag.parse(prefix + text);
        } catch (error) {
          if (!(error instanceof AddressError)) throw error;
        }
      }),
      { numRuns: 3000 },
    );
  });
});
