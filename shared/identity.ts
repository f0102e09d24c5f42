/**
 * Identities: Ed25519 key pairs. An XIA identifier of a principal that owns a key
 * (HID of a host, AD of a domain, SID of a service) is SHA-1 of its raw 32-byte
 * public key, so anyone holding the key can prove the XID is theirs.
 */
import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname } from 'node:path';
import { XmigError, errorMessage } from './errors.js';
import { Xid } from './xid.js';

export const PUBLIC_KEY_LENGTH = 32;
export const SIGNATURE_LENGTH = 64;

/**
 * DER framing of Ed25519 keys (RFC 8410): a PKCS#8 private key is this prefix and the
 * 32-byte seed, a SubjectPublicKeyInfo this prefix and the 32-byte public key.
 */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function rawPublicKey(key: KeyObject): Buffer {
  const spki = key.export({ format: 'der', type: 'spki' });
  if (spki.length !== SPKI_ED25519_PREFIX.length + PUBLIC_KEY_LENGTH || !spki.subarray(0, SPKI_ED25519_PREFIX.length).equals(SPKI_ED25519_PREFIX)) {
    throw new XmigError('ERR_IDENTITY', 'key is not an Ed25519 key');
  }
  return Buffer.from(spki.subarray(SPKI_ED25519_PREFIX.length));
}

export class Identity {
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Buffer;

  private constructor(private readonly privateKey: KeyObject) {
    this.publicKey = rawPublicKey(createPublicKey(privateKey));
  }

  /**
   * A new key: 32 random bytes are an Ed25519 private key (RFC 8032 5.1.5). Not
   * generateKeyPairSync: on Node.js 20 a garbage collection that finalizes one of its
   * key-generation jobs while a key sharing that job's lock is being exported deadlocks
   * the process (seen as a CI test file hanging in the mutex; tens of thousands of
   * identities hang it within seconds at a small young generation: identity.test.ts).
   */
  static generate(): Identity {
    return new Identity(createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, randomBytes(32)]), format: 'der', type: 'pkcs8' }));
  }

  /** Reads a PKCS#8 PEM private key file. */
  static load(file: string): Identity {
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (error) {
      throw new XmigError('ERR_IDENTITY', `cannot read key file ${file}: ${errorMessage(error)}`, { cause: error });
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(pem);
    } catch (error) {
      throw new XmigError('ERR_IDENTITY', `key file ${file} is not a PEM private key: ${errorMessage(error)}`, {
        cause: error,
      });
    }
    if (key.asymmetricKeyType !== 'ed25519') {
      throw new XmigError('ERR_IDENTITY', `key file ${file} holds a ${key.asymmetricKeyType} key, not Ed25519`);
    }
    return new Identity(key);
  }

  /**
   * The key from its PKCS#8 DER bytes (48 for Ed25519; 64 characters of base64url), as a
   * VM receives it on its kernel command line.
   */
  static fromPkcs8(der: Uint8Array): Identity {
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: Buffer.from(der), format: 'der', type: 'pkcs8' });
    } catch (error) {
      throw new XmigError('ERR_IDENTITY', `not a PKCS#8 DER private key: ${errorMessage(error)}`, { cause: error });
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new XmigError('ERR_IDENTITY', `a ${key.asymmetricKeyType} key, not Ed25519`);
    return new Identity(key);
  }

  /** The private key as PKCS#8 DER: what `fromPkcs8` reads and a PEM file's body holds. */
  toPkcs8(): Buffer {
    return this.privateKey.export({ format: 'der', type: 'pkcs8' });
  }

  /** Loads the key at `file`, creating (mode 0600) a new one if the file does not exist. */
  static loadOrCreate(file: string): Identity {
    try {
      return Identity.load(file);
    } catch (error) {
      const cause = (error as XmigError).cause as NodeJS.ErrnoException | undefined;
      if (cause?.code !== 'ENOENT') throw error;
    }
    const identity = Identity.generate();
    identity.save(file);
    return identity;
  }

  /** Writes the private key atomically, readable by its owner only. */
  save(file: string): void {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const pem = this.privateKey.export({ format: 'pem', type: 'pkcs8' });
    const temporary = `${file}.${process.pid}.tmp`;
    writeFileSync(temporary, pem, { mode: 0o600 });
    chmodSync(temporary, 0o600);
    renameSync(temporary, file);
  }

  /** The XID of the given principal type that this key owns. */
  xid(type: number): Xid {
    return Xid.hashOf(type, this.publicKey);
  }

  sign(data: Uint8Array): Buffer {
    return sign(null, data, this.privateKey);
  }
}

// Verifying many messages from the same few keys (routers, VMs) should not rebuild
// the KeyObject each time; a small bounded cache keeps the notice path cheap.
const keyCache = new Map<string, KeyObject>();
const KEY_CACHE_LIMIT = 1024;

function publicKeyObject(raw: Buffer): KeyObject {
  const cacheKey = raw.toString('base64url');
  let key = keyCache.get(cacheKey);
  if (!key) {
    key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: cacheKey }, format: 'jwk' });
    if (keyCache.size >= KEY_CACHE_LIMIT) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(cacheKey, key);
  }
  return key;
}

/** Checks an Ed25519 signature; false (never a throw) for a bad key or signature. */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== PUBLIC_KEY_LENGTH || signature.length !== SIGNATURE_LENGTH) return false;
  try {
    return verify(null, data, publicKeyObject(Buffer.from(publicKey)), signature);
  } catch {
    return false;
  }
}

/** The XID of `type` that a raw public key owns. */
export function xidOfKey(type: number, publicKey: Uint8Array): Xid {
  return Xid.hashOf(type, publicKey);
}
