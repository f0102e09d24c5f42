/**
 * The paper's calculation service: every even number greater than 2 is the sum of
 * two primes (Goldbach's conjecture); the server finds the pair with the smallest
 * prime, the client checks it. Deterministic Miller-Rabin keeps it exact up to
 * 2^53 and the search cheap enough to answer continuously.
 */

const SMALL_PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];

function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
    e >>= 1n;
  }
  return result;
}

/** Exact primality for integers below 2^53 (Miller-Rabin with the first 12 primes as bases). */
export function isPrime(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 2) return false;
  for (const p of SMALL_PRIMES) {
    if (n === p) return true;
    if (n % p === 0) return false;
  }
  if (n < 1369) return true; // 37^2: no factor up to 37 means prime
  if (n < 2 ** 31) {
    // Trial division by 6k±1 up to sqrt(n) is faster than bigint arithmetic here.
    for (let i = 41; i * i <= n; i += 6) if (n % i === 0 || n % (i + 2) === 0) return false;
    return true;
  }
  const big = BigInt(n);
  let d = big - 1n;
  let r = 0;
  while ((d & 1n) === 0n) {
    d >>= 1n;
    r++;
  }
  witness: for (const a of SMALL_PRIMES) {
    let x = modPow(BigInt(a), d, big);
    if (x === 1n || x === big - 1n) continue;
    for (let i = 1; i < r; i++) {
      x = (x * x) % big;
      if (x === big - 1n) continue witness;
    }
    return false;
  }
  return true;
}

/** The pair of primes p <= q with p + q = n and p smallest. */
export function goldbachPair(n: number): [number, number] {
  if (!Number.isSafeInteger(n) || n < 4 || n % 2 !== 0) throw new RangeError(`${n} is not an even integer greater than 2`);
  if (n === 4) return [2, 2];
  for (let p = 3; p <= n / 2; p += 2) {
    if (isPrime(p) && isPrime(n - p)) return [p, n - p];
  }
  throw new Error(`no Goldbach pair for ${n}: the conjecture is false`);
}

/** True if p and q are primes summing to n. */
export function checkPair(n: number, p: number, q: number): boolean {
  return p + q === n && isPrime(p) && isPrime(q);
}
