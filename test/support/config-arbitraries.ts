/**
 * Generators for config-file fuzzing: valid configs of each loader, and mutations of
 * them (wrong types, deleted and added keys, huge numbers, number-like strings, deep
 * nesting, prototype keys), rendered as the JSON text a file would hold.
 */
import fc from 'fast-check';

const HID = 'HID:' + '1'.repeat(40);
const AD = 'AD:' + '2'.repeat(40);

export const name = fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/).filter((n) => !['__proto__', 'constructor', 'prototype'].includes(n));

export const validNodeConfig = fc.record({
  name,
  role: fc.constantFrom('router', 'host'),
  keyFile: fc.constant('/var/lib/xmig/node.key'),
  beaconIntervalMs: fc.integer({ min: 5, max: 60_000 }),
  helloIntervalMs: fc.integer({ min: 10, max: 60_000 }),
  trustedAds: fc.constant([AD]),
  interfaces: fc.array(fc.record({ name, port: fc.integer({ min: 1, max: 65535 }), peers: fc.constant(['127.0.0.1:7001']), mtu: fc.integer({ min: 576, max: 65536 }) }), { minLength: 1, maxLength: 3 }),
  routes: fc.constant([{ type: 'HID', xid: HID, port: 0, flags: 0 }]),
  controlPort: fc.constantFrom({}, { host: '127.0.0.1', port: 7777 }, { limits: { idleTimeoutMs: 60_000 } }),
  metrics: fc.record({ port: fc.integer({ min: 0, max: 65535 }) }),
});

export const validAgentConfig = fc.record({
  router: name,
  names: fc.constant([{ name: 'vm.example', sid: 'SID:' + '3'.repeat(40) }]),
  resume: fc.record({ tickMs: fc.integer({ min: 5, max: 10_000 }), stallMs: fc.integer({ min: 20, max: 10_000 }) }),
  schedules: fc.record({ refresh: fc.constantFrom('*/5 * * * *', false), health: fc.constant('* * * * *') }),
  metrics: fc.record({ port: fc.integer({ min: 0, max: 65535 }) }),
});

export const validTopology = fc.constant({
  name: 'fuzz',
  ads: ['AD1', 'AD2'],
  segments: ['seg-A', 'seg-B'],
  nodes: [
    { name: 'R1', role: 'router', ad: 'AD1', interfaces: [{ segment: 'seg-A', hostFacing: true }, { segment: 'seg-B' }] },
    { name: 'A', role: 'host', stands: 'source host', interfaces: [{ segment: 'seg-A' }] },
  ],
  impairments: { 'seg-A': { lossRate: 0.01, delayMs: 5, mtu: 1500 } },
});

/** Values that break a field's type or range. */
export const badValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, true, false, '', 'abc', 'NaN', 'Infinity', '1e999', '0x10', ' 5', -1, 0, -0, 1.5, 2 ** 31, 2 ** 53, 1e308, -1e308, [], {}, 'a\u0000b', '__proto__', 'x y\nz'),
  fc.integer(),
  fc.double(),
  fc.string({ maxLength: 20 }),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.integer({ min: 33, max: 200 }).map((depth) => JSON.parse('['.repeat(depth) + ']'.repeat(depth)) as unknown),
);

export type Mutation =
  | { kind: 'set'; at: number; value: unknown }
  | { kind: 'delete'; at: number }
  | { kind: 'add'; at: number; key: string; value: unknown };

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: badValue }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('add' as const), at: fc.nat(), key: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'bogus', 'Name'), fc.string({ maxLength: 8 })), value: badValue }),
);

/** Every object and array inside `value` (itself first), for picking where a mutation lands. */
function containers(value: unknown, out: Array<Record<string, unknown> | unknown[]> = []): Array<Record<string, unknown> | unknown[]> {
  if (typeof value === 'object' && value !== null) {
    out.push(value as Record<string, unknown>);
    for (const child of Object.values(value)) containers(child, out);
  }
  return out;
}

export function mutate(config: unknown, mutations: Mutation[]): unknown {
  const copy = structuredClone(config);
  for (const m of mutations) {
    const all = containers(copy);
    const target = all[m.at % all.length]!;
    const keys = Object.keys(target);
    if (m.kind === 'add') {
      // defineProperty: an own "__proto__" key, as JSON.parse makes one.
      Object.defineProperty(target, Array.isArray(target) ? String(target.length) : m.key, { value: structuredClone(m.value), enumerable: true, writable: true, configurable: true });
    } else if (keys.length > 0) {
      const key = keys[m.at % keys.length]!;
      if (m.kind === 'delete') {
        if (Array.isArray(target)) target.splice(Number(key), 1);
        else delete target[key];
      } else {
        Object.defineProperty(target, key, { value: structuredClone(m.value), enumerable: true, writable: true, configurable: true });
      }
    }
  }
  return copy;
}

/** JSON text of a valid config, mutated or not, sometimes cut or padded as a damaged file would be. */
export function configText(valid: fc.Arbitrary<unknown>): fc.Arbitrary<string> {
  return fc.tuple(valid, fc.array(mutation, { maxLength: 4 }), fc.nat({ max: 19 }), fc.nat()).map(([config, mutations, damage, at]) => {
    const text = JSON.stringify(mutate(config, mutations));
    if (damage === 0) return text.slice(0, at % (text.length + 1));
    if (damage === 1) return `${'{"a":'.repeat(40)}${text}${'}'.repeat(40)}`;
    if (damage === 2) return text + ' '.repeat(1024 * 1024);
    if (damage === 3) return text.replace(/\d+/, '1e999');
    return text;
  });
}
