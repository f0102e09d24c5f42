import { spawnSync } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Identity, verifySignature } from './identity.js';
import { openMessage, sealMessage, SignedKind } from './signed-message.js';
import { SignatureError, type XmigError } from './errors.js';
import fc from 'fast-check';
import { XidType } from './xid.js';

describe('Identity', () => {
  it('stores the private key with mode 0600 and loads the same identity back', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmig-id-'));
    const file = join(dir, 'keys', 'vm.key');
    const created = Identity.loadOrCreate(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const loaded = Identity.loadOrCreate(file);
    expect(loaded.publicKey.equals(created.publicKey)).toBe(true);
    expect(loaded.xid(XidType.HID).equals(created.xid(XidType.HID))).toBe(true);
  });

  it('derives XIDs as SHA-1 of the raw public key', () => {
    const identity = Identity.generate();
    expect(identity.publicKey.length).toBe(32);
    expect(identity.xid(XidType.AD).type).toBe(XidType.AD);
    expect(identity.xid(XidType.HID).id.equals(identity.xid(XidType.AD).id)).toBe(true);
  });

  it('round-trips through PKCS#8 DER (48 bytes, 64 base64url characters) and refuses other bytes', () => {
    const identity = Identity.generate();
    const der = identity.toPkcs8();
    expect(der.length).toBe(48);
    expect(der.toString('base64url')).toHaveLength(64);
    expect(Identity.fromPkcs8(der).xid(XidType.HID).equals(identity.xid(XidType.HID))).toBe(true);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        try {
          Identity.fromPkcs8(bytes);
        } catch (error) {
          expect((error as XmigError).code).toBe('ERR_IDENTITY');
        }
      }),
    );
  });

  it('rejects a key file that is not a PEM key, naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmig-id-'));
    const file = join(dir, 'junk.key');
    writeFileSync(file, 'not a key');
    expect(() => Identity.load(file)).toThrow(/junk\.key is not a PEM private key/);
  });

  it('verifies its own signatures and no others', () => {
    const a = Identity.generate();
    const b = Identity.generate();
    const data = Buffer.from('hello');
    const signature = a.sign(data);
    expect(verifySignature(a.publicKey, data, signature)).toBe(true);
    expect(verifySignature(b.publicKey, data, signature)).toBe(false);
    expect(verifySignature(a.publicKey, Buffer.from('hellO'), signature)).toBe(false);
    expect(verifySignature(a.publicKey.subarray(1), data, signature)).toBe(false);
  });
});

describe('signed messages', () => {
  const vm = Identity.generate();
  const other = Identity.generate();
  const body = Buffer.from('HID moved to AD2');

  it('opens a sealed message and names the signer', () => {
    const sealed = sealMessage(vm, SignedKind.MOVE_NOTICE, body);
    const opened = openMessage(sealed, { kind: SignedKind.MOVE_NOTICE, claimedXid: vm.xid(XidType.HID) });
    expect(opened.body.equals(body)).toBe(true);
    expect(opened.signer(XidType.HID).equals(vm.xid(XidType.HID))).toBe(true);
  });

  function reason(fn: () => unknown): string {
    try {
      fn();
    } catch (error) {
      if (error instanceof SignatureError) return error.reason;
      throw error;
    }
    return 'accepted';
  }

  it('rejects a signature made by another key (key swapped in)', () => {
    const sealed = sealMessage(vm, SignedKind.MOVE_NOTICE, body);
    other.publicKey.copy(sealed, 2);
    expect(reason(() => openMessage(sealed, { kind: SignedKind.MOVE_NOTICE }))).toBe('bad-signature');
  });

  it('rejects a genuine message whose key does not hash to the claimed XID', () => {
    const sealed = sealMessage(other, SignedKind.MOVE_NOTICE, body);
    expect(
      reason(() => openMessage(sealed, { kind: SignedKind.MOVE_NOTICE, claimedXid: vm.xid(XidType.HID) })),
    ).toBe('key-mismatch');
  });

  it('rejects a tampered body', () => {
    const sealed = sealMessage(vm, SignedKind.MOVE_NOTICE, body);
    sealed[40] ^= 0x01;
    expect(reason(() => openMessage(sealed, { kind: SignedKind.MOVE_NOTICE }))).toBe('bad-signature');
  });

  it('rejects a message of another kind, and truncated ones', () => {
    const sealed = sealMessage(vm, SignedKind.NAME_RECORD, body);
    expect(reason(() => openMessage(sealed, { kind: SignedKind.MOVE_NOTICE }))).toBe('wrong-kind');
    expect(reason(() => openMessage(sealed.subarray(0, sealed.length - 1), { kind: SignedKind.NAME_RECORD }))).toBe(
      'malformed',
    );
    expect(reason(() => openMessage(Buffer.alloc(10), { kind: SignedKind.NAME_RECORD }))).toBe('malformed');
  });
});

describe('Identity.generate under garbage collection', () => {
  it('makes tens of thousands of identities without hanging the process (Node 20 deadlocked generateKeyPairSync + a key export in GC)', () => {
    // In a child with a 1 MB young generation (a scavenge every few hundred keys): the old
    // generateKeyPairSync + JWK export hung such a loop within seconds, every time.
    const identityModule = join(dirname(fileURLToPath(import.meta.url)), 'identity.ts');
    const code = `const { Identity } = await import(${JSON.stringify(identityModule)}); const seen = new Set(); for (let i = 0; i < 30000; i++) seen.add(Identity.generate().publicKey.toString('hex')); console.log(seen.size);`;
    const child = spawnSync(process.execPath, ['--max-semi-space-size=1', '--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 90_000 });
    expect(child.error, 'the loop hung (killed at 90 s)').toBeUndefined();
    expect(child.status, child.stderr).toBe(0);
    expect(child.stdout.trim()).toBe('30000');
  }, 120_000);
});
