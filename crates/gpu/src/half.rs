//! fp16 for the chain's entries. Every value in [-8, 8] is exact in fp16; the GPU reads B and
//! the rows as fp16 bits, the same table the reduce kernel writes with.

/// fp16 bit patterns of -8..=8 (index v + 8), as `HERD_HALF_OF` in kernels.cu.
pub const HALF_OF: [u16; 17] = [
    0xC800, 0xC700, 0xC600, 0xC500, 0xC400, 0xC200, 0xC000, 0xBC00, 0x0000, 0x3C00, 0x4000, 0x4200, 0x4400, 0x4500,
    0x4600, 0x4700, 0x4800,
];

pub fn encode(value: i8) -> u16 {
    assert!((-8..=8).contains(&value), "chain entries live in [-8, 8], got {value}");
    HALF_OF[(value + 8) as usize]
}

pub fn encode_all(values: &[i8]) -> Vec<u16> {
    values.iter().map(|v| encode(*v)).collect()
}

/// IEEE 754 binary16 to f32, from the bits (normal and zero values; the chain has no others).
pub fn decode(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f32::from(bits & 0x3ff);
    if exponent == 0 {
        return sign * mantissa * 2f32.powi(-24);
    }
    sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chain_value_round_trips_exactly() {
        for v in -8i8..=8 {
            assert_eq!(decode(encode(v)), f32::from(v), "{v}");
        }
        assert_eq!(decode(0x3555), 0.333_251_95, "a non-integer decodes too");
    }
}
