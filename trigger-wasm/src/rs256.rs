//! RS256 signature verification (RSASSA-PKCS1-v1_5 with SHA-256), the public-key operation
//! only, sized for a component that verifies one token per fresh instance.
//!
//! Why not `rsa::RsaPublicKey::verify`: its `modpow` (num-bigint-dig) recomputes R² mod n and a
//! table of 16 powers on every call and walks all 32 bits of the exponent word in 4-bit windows,
//! about 58 Montgomery products for e = 65537. Under wasmtime that is ~0.55 ms per token, most of
//! an ignored event's budget when the host creates an instance per request. Here R² mod n is
//! computed once per key (when the JWKS is parsed) and the exponentiation is plain
//! square-and-multiply: 19 products for e = 65537, ~0.12 ms in wasm (measured).
//!
//! The check follows RFC 8017 §8.2.2: the signature must have the modulus's length and be
//! below it; s^e mod n is compared byte for byte with the encoding of the expected digest
//! (EMSA-PKCS1-v1_5 with SHA-256's DigestInfo), never parsed. Everything here is public data,
//! so nothing needs to be constant-time. The unit tests check the arithmetic against
//! num-bigint-dig's `modpow` and the verdicts against the `rsa` crate.

use rsa::BigUint;
use rsa::traits::PublicKeyParts;

/// DER prefix of SHA-256's `DigestInfo` (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// An RSA public key prepared for Montgomery arithmetic with 32-bit limbs (wasm32's native
/// word; 32×32→64 products are single instructions there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyKey {
    /// Modulus, little-endian limbs, no leading zero limb.
    n: Vec<u32>,
    /// −n⁻¹ mod 2³².
    n0inv: u32,
    /// R² mod n with R = 2^(32·limbs), in limbs.
    rr: Vec<u32>,
    /// Public exponent.
    e: u64,
    /// Modulus length in bytes (the signature's length).
    k: usize,
}

/// Little-endian 32-bit limbs of a big-endian byte string, padded with zero limbs to `len`.
fn limbs(be: &[u8], len: usize) -> Vec<u32> {
    let mut out: Vec<u32> = be
        .rchunks(4)
        .map(|c| c.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)))
        .collect();
    out.resize(len.max(out.len()), 0);
    out
}

/// `a >= b` for equal-length limb slices.
fn ge(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b` for equal-length limb slices; returns the borrow.
fn sub_in_place(a: &mut [u32], b: &[u32]) -> bool {
    let mut borrow = false;
    for (x, &y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(y);
        let (d2, b2) = d1.overflowing_sub(u32::from(borrow));
        *x = d2;
        borrow = b1 || b2;
    }
    borrow
}

impl VerifyKey {
    /// Prepares `key`; `None` if its modulus is even (no RSA modulus is) or its exponent is
    /// below 2 or does not fit 64 bits (the `rsa` crate already refuses both).
    pub fn new(key: &rsa::RsaPublicKey) -> Option<VerifyKey> {
        let n_be = key.n().to_bytes_be();
        let e_be = key.e().to_bytes_be();
        if e_be.len() > 8 || n_be.last().is_none_or(|b| b & 1 == 0) {
            return None;
        }
        let e = e_be.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        if e < 2 {
            return None;
        }
        let n = limbs(&n_be, 0);
        let s = n.len();
        // Newton's iteration for n⁻¹ mod 2³² (each step doubles the correct low bits; n odd).
        let mut inv: u32 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n[0].wrapping_mul(inv)));
        }
        let rr = (BigUint::from(1u32) << (64 * s)) % key.n();
        Some(VerifyKey {
            rr: limbs(&rr.to_bytes_be(), s),
            n0inv: inv.wrapping_neg(),
            e,
            k: key.size(),
            n,
        })
    }

    /// Montgomery product a·b·R⁻¹ mod n (CIOS) into `out`; `a`, `b` < n; `t` is scratch of
    /// `limbs + 2`. Names as in the CIOS description (Koç, Acar, Kaliski 1996).
    #[allow(clippy::many_single_char_names)]
    fn mont_mul(&self, a: &[u32], b: &[u32], t: &mut [u32], out: &mut [u32]) {
        let n = &self.n;
        let s = n.len();
        t.fill(0);
        for &bi in b {
            let bi = u64::from(bi);
            let mut c = 0u64;
            for (tj, &aj) in t.iter_mut().zip(a) {
                let x = u64::from(*tj) + u64::from(aj) * bi + c;
                *tj = x as u32;
                c = x >> 32;
            }
            let x = u64::from(t[s]) + c;
            t[s] = x as u32;
            t[s + 1] = (x >> 32) as u32;
            let m = u64::from(t[0].wrapping_mul(self.n0inv));
            let mut c = (u64::from(t[0]) + m * u64::from(n[0])) >> 32;
            for j in 1..s {
                let x = u64::from(t[j]) + m * u64::from(n[j]) + c;
                t[j - 1] = x as u32;
                c = x >> 32;
            }
            let x = u64::from(t[s]) + c;
            t[s - 1] = x as u32;
            t[s] = t[s + 1] + (x >> 32) as u32;
        }
        // t < 2n: one conditional subtraction brings it below n.
        out.copy_from_slice(&t[..s]);
        if t[s] != 0 || ge(out, n) {
            sub_in_place(out, n);
        }
    }

    /// x^e mod n for x < n (little-endian limbs of the modulus's length).
    fn pow_e(&self, x: &[u32]) -> Vec<u32> {
        let s = self.n.len();
        let mut t = vec![0u32; s + 2];
        let mut xm = vec![0u32; s];
        self.mont_mul(x, &self.rr, &mut t, &mut xm); // x·R mod n
        let mut acc = xm.clone();
        let mut tmp = vec![0u32; s];
        let top = self.e.ilog2();
        for bit in (0..top).rev() {
            self.mont_mul(&acc, &acc, &mut t, &mut tmp);
            std::mem::swap(&mut acc, &mut tmp);
            if self.e >> bit & 1 == 1 {
                self.mont_mul(&acc, &xm, &mut t, &mut tmp);
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        let mut one = vec![0u32; s];
        one[0] = 1;
        self.mont_mul(&acc, &one, &mut t, &mut tmp); // leave the Montgomery domain
        tmp
    }

    /// Whether `signature` is a valid RSASSA-PKCS1-v1_5 signature of the SHA-256 `digest`.
    pub fn verify_sha256(&self, digest: &[u8; 32], signature: &[u8]) -> bool {
        let k = self.k;
        if signature.len() != k || k < SHA256_DIGEST_INFO.len() + 32 + 11 {
            return false;
        }
        let s = limbs(signature, self.n.len());
        if s.len() != self.n.len() || ge(&s, &self.n) {
            return false;
        }
        let m = self.pow_e(&s);
        // Big-endian, k bytes (limbs cover ≥ k bytes; the extra top bytes of m are zero as m < n).
        let mut em: Vec<u8> = m.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
        let em = em.split_off(em.len() - k);
        let mut expected = Vec::with_capacity(k);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(k - SHA256_DIGEST_INFO.len() - 32 - 1, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(&SHA256_DIGEST_INFO);
        expected.extend_from_slice(digest);
        em == expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
    use rsa::{Pkcs1v15Sign, RsaPublicKey};
    use sha2::{Digest, Sha256};

    fn random_below(rng: &mut StdRng, n: &BigUint) -> BigUint {
        let mut b = vec![0u8; n.to_bytes_be().len()];
        rng.fill_bytes(&mut b);
        BigUint::from_bytes_be(&b) % n
    }

    #[test]
    fn exponentiation_matches_num_bigint() {
        let mut rng = StdRng::seed_from_u64(7);
        for bits in [2048usize, 2056, 3072, 4096] {
            for round in 0..8 {
                // A random odd modulus of exactly `bits` bits (not a real RSA modulus: the
                // arithmetic does not care).
                let mut nb = vec![0u8; bits.div_ceil(8)];
                rng.fill_bytes(&mut nb);
                nb[0] |= 0x80;
                *nb.last_mut().unwrap() |= 1;
                let n = BigUint::from_bytes_be(&nb);
                let e: u64 = match round {
                    0 => 65537,
                    1 => 3,
                    2 => (1 << 33) + 1,
                    _ => rng.gen_range(3..u64::from(u32::MAX)) | 1,
                };
                let key = RsaPublicKey::new_unchecked(n.clone(), BigUint::from(e));
                let vk = VerifyKey::new(&key).unwrap();
                for x in [
                    BigUint::from(0u32),
                    BigUint::from(1u32),
                    &n - 1u32,
                    random_below(&mut rng, &n),
                    random_below(&mut rng, &n),
                ] {
                    let got = vk.pow_e(&limbs(&x.to_bytes_be(), vk.n.len()));
                    let got_be: Vec<u8> = got.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
                    let want = x.modpow(&BigUint::from(e), &n);
                    assert_eq!(BigUint::from_bytes_be(&got_be), want, "{bits} bits, e={e}");
                }
            }
        }
    }

    #[test]
    fn verdicts_match_the_rsa_crate() {
        let mut rng = StdRng::seed_from_u64(11);
        let private = &crate::testutil::test_key().key;
        let public = RsaPublicKey::from(private);
        let vk = VerifyKey::new(&public).unwrap();
        for i in 0..40 {
            let mut msg = vec![0u8; rng.gen_range(0..200)];
            rng.fill_bytes(&mut msg);
            let digest: [u8; 32] = Sha256::digest(&msg).into();
            let mut sig = private
                .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
                .unwrap();
            match i % 4 {
                0 => {}
                1 => {
                    let at = rng.gen_range(0..sig.len());
                    sig[at] ^= 1 << rng.gen_range(0..8);
                }
                2 => sig = sig[1..].to_vec(),
                _ => {
                    // Wrong digest, valid signature.
                    let mut other = digest;
                    other[31] ^= 1;
                    let want = public
                        .verify(Pkcs1v15Sign::new::<Sha256>(), &other, &sig)
                        .is_ok();
                    assert!(!want);
                    assert!(!vk.verify_sha256(&other, &sig));
                    continue;
                }
            }
            let want = public
                .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
                .is_ok();
            assert_eq!(vk.verify_sha256(&digest, &sig), want, "case {i}");
            assert_eq!(want, i % 4 == 0, "case {i}");
        }
        // A signature equal to or above the modulus is refused, as is one of the wrong length.
        let digest = [0u8; 32];
        let n_be = public.n().to_bytes_be();
        assert!(!vk.verify_sha256(&digest, &n_be));
        assert!(!vk.verify_sha256(&digest, &vec![0xff; n_be.len()]));
        assert!(!vk.verify_sha256(&digest, &[]));
        assert!(!vk.verify_sha256(&digest, &vec![0; n_be.len() + 1]));
    }

    #[test]
    fn even_moduli_are_refused() {
        let key = RsaPublicKey::new_unchecked(BigUint::from(1u32) << 2048, BigUint::from(65537u32));
        assert!(VerifyKey::new(&key).is_none());
    }
}
