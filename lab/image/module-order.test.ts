import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XmigError } from '../../shared/errors.js';
import { GUEST_MODULES, moduleLoadOrder, moduleName, parseModulesDep } from './module-order.js';

/** Lines of Debian 12's 6.1.0-57-amd64 modules.dep (abridged, in its order). */
const MODULES_DEP = `
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
`;

describe('kernel module load order from modules.dep', () => {
  it("loads virtio-net's dependencies in the order measured on a real guest", () => {
    const order = moduleLoadOrder(parseModulesDep(MODULES_DEP), ['virtio_pci', 'virtio_net']).map(moduleName);
    expect(order).toEqual(['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'failover', 'net_failover', 'virtio_net']);
  });

  it('gives the guest its NIC, its disk and ext4, each module once, dependencies first', () => {
    const order = moduleLoadOrder(parseModulesDep(MODULES_DEP), GUEST_MODULES).map(moduleName);
    expect(order).toEqual([
      ...['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'failover', 'net_failover', 'virtio_net'],
      ...['virtio_blk', 'crc32c_generic', 'jbd2', 'mbcache', 'crc16', 'ext4'],
    ]);
  });

  it('reads names as modprobe does ("-" is "_", compressed modules too)', () => {
    expect(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko')).toBe('virtio_rng');
    expect(moduleName('kernel/fs/ext4/ext4.ko.xz')).toBe('ext4');
    expect(moduleLoadOrder(parseModulesDep(MODULES_DEP), ['virtio-rng']).map(moduleName)).toEqual(['virtio_ring', 'virtio', 'virtio_rng']);
  });

  it('refuses a module the kernel lacks, a dependency it does not describe, a cycle and a malformed line', () => {
    const deps = parseModulesDep(MODULES_DEP);
    expect(() => moduleLoadOrder(deps, ['e1000'])).toThrow(/no module e1000/);
    expect(() => moduleLoadOrder(parseModulesDep('a.ko: b.ko\n'), ['a'])).toThrow(/does not describe/);
    expect(() => moduleLoadOrder(parseModulesDep('a.ko: b.ko\nb.ko: a.ko\n'), ['a'])).toThrow(/cycle: a -> b -> a/);
    expect(() => parseModulesDep('kernel/a.ko: x.ko\nthis is not a module line\n')).toThrow(/line 2/);
  });

  it('orders any dependency graph so that every module follows what it needs', () => {
    // Random DAGs: module i may depend only on modules with a smaller index.
    const graph = fc.array(fc.array(fc.nat(), { maxLength: 4 }), { minLength: 1, maxLength: 25 }).map((lists) =>
      lists.map((deps, i) => ({ file: `m${i}.ko`, deps: i === 0 ? [] : [...new Set(deps.map((d) => `m${d % i}.ko`))] })),
    );
    fc.assert(
      fc.property(graph, fc.array(fc.nat(), { minLength: 1, maxLength: 5 }), (modules, picks) => {
        const deps = parseModulesDep(modules.map((m) => `${m.file}: ${m.deps.join(' ')}`).join('\n'));
        const wanted = picks.map((p) => `m${p % modules.length}`);
        const order = moduleLoadOrder(deps, wanted);
        expect(new Set(order).size).toBe(order.length);
        for (const name of wanted) expect(order).toContain(`${name}.ko`);
        order.forEach((file, position) => {
          for (const needed of deps.get(file)!) expect(order.indexOf(needed)).toBeLessThan(position);
        });
      }),
    );
  });

  it('never throws anything but a typed error on garbage', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (text) => {
        try {
          moduleLoadOrder(parseModulesDep(text), ['virtio_net']);
        } catch (error) {
          expect(error).toBeInstanceOf(XmigError);
        }
      }),
    );
  });
});
