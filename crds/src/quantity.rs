//! Kubernetes resource quantities: parsing, exact arithmetic and the canonical text form.
//!
//! KubeRay turns quantities into `ray start` numbers (rounded up to integers) and sums them
//! into `status.desired*`, whose text must match what Go's `resource.Quantity` prints. Values
//! are held exactly as nano-units in an `i128`: 1Ei is 2^60, times 10^9 still fits easily.

use std::fmt;

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// How a quantity was written; the sum of quantities keeps the format of its first term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, `Gi`... (powers of 1024).
    BinarySi,
    /// `m`, `k`, `M`, `G`... or no suffix (powers of 1000).
    DecimalSi,
    /// `1e3`, `5E-3`.
    DecimalExponent,
}

/// An exact quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// A quantity that does not follow the Kubernetes grammar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid quantity {:?}", self.0)
    }
}

impl std::error::Error for QuantityError {}

impl Quantity {
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: Format::DecimalSi,
    };

    /// Parses `<sign><digits>[.<digits>][suffix]`.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let error = || QuantityError(text.to_owned());
        let trimmed = text.trim();
        let (negative, unsigned) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let number_end = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(error());
        }
        // mantissa = whole.fraction as an integer scaled by 10^-fraction_digits.
        let mut mantissa: i128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit - b'0')))
                .ok_or_else(error)?;
        }
        let fraction_digits = i32::try_from(fraction.len()).map_err(|_| error())?;
        let (format, base2_shift, base10_exponent) = parse_suffix(suffix).ok_or_else(error)?;
        // nanos = mantissa * 2^shift * 10^(exponent + 9 - fraction_digits), rounded up.
        let mut nanos = mantissa
            .checked_mul(1i128.checked_shl(base2_shift).ok_or_else(error)?)
            .ok_or_else(error)?;
        let exponent = base10_exponent + 9 - fraction_digits;
        if exponent >= 0 {
            nanos = nanos
                .checked_mul(
                    10i128
                        .checked_pow(exponent.unsigned_abs())
                        .ok_or_else(error)?,
                )
                .ok_or_else(error)?;
        } else {
            let divisor = 10i128
                .checked_pow(exponent.unsigned_abs())
                .ok_or_else(error)?;
            nanos = (nanos + divisor - 1) / divisor;
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value rounded up to an integer, as Go's `Quantity.Value()`.
    pub fn ceil_value(&self) -> i64 {
        let units = self.nanos.div_euclid(NANOS_PER_UNIT)
            + i128::from(self.nanos.rem_euclid(NANOS_PER_UNIT) != 0);
        i64::try_from(units).unwrap_or(if units > 0 { i64::MAX } else { i64::MIN })
    }

    /// The value as a float (for Ray's custom resources JSON).
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANOS_PER_UNIT as f64
    }

    pub fn times(self, factor: i64) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_mul(i128::from(factor)),
            format: self.format,
        }
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;

    /// The sum; a zero left side takes the right side's format, as Go's `Add`.
    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }
}

/// (format, power of two, power of ten) of a suffix.
fn parse_suffix(suffix: &str) -> Option<(Format, u32, i32)> {
    let binary = |shift| Some((Format::BinarySi, shift, 0));
    let decimal = |exponent| Some((Format::DecimalSi, 0, exponent));
    match suffix {
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            Some((Format::DecimalExponent, 0, exponent.parse().ok()?))
        }
    }
}

/// Go's canonical form: binary quantities of at least 1024 that are whole numbers use the
/// largest exact power of 1024; everything else uses the largest power of 1000 that keeps
/// the mantissa whole.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        if self.format == Format::BinarySi
            && self.nanos.abs() >= 1024 * NANOS_PER_UNIT
            && self.nanos % NANOS_PER_UNIT == 0
        {
            let mut value = self.nanos / NANOS_PER_UNIT;
            let mut power = 0;
            while power < 6 && value % 1024 == 0 {
                value /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return write!(f, "{value}{suffix}");
        }
        let mut mantissa = self.nanos;
        let mut exponent: i32 = -9;
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        let extra = exponent.rem_euclid(3);
        exponent -= extra;
        mantissa *= 10i128.pow(extra.unsigned_abs());
        if self.format == Format::DecimalExponent {
            return if exponent == 0 {
                write!(f, "{mantissa}")
            } else {
                write!(f, "{mantissa}e{exponent}")
            };
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => return write!(f, "{mantissa}e{exponent}"),
        };
        write!(f, "{mantissa}{suffix}")
    }
}

/// Renders a float as Go's `encoding/json` does for ordinary magnitudes: whole numbers
/// without a decimal point (`1`, not `1.0`).
pub fn go_float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e21 {
        format!("{}", value as i128)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rounds_up_like_go_value() {
        let cases = [
            ("1", 1),
            ("500m", 1),
            ("1500m", 2),
            ("2Gi", 2_147_483_648),
            ("1G", 1_000_000_000),
            ("0.5", 1),
            ("1e3", 1000),
            ("100Mi", 104_857_600),
            ("0", 0),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Quantity::parse(text).unwrap().ceil_value(),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "abc", "1.2.3", "1Xi", "."] {
            assert!(Quantity::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn canonical_text_matches_go() {
        let sum = |parts: &[(&str, i64)]| {
            parts.iter().fold(Quantity::ZERO, |total, (text, times)| {
                total + Quantity::parse(text).unwrap().times(*times)
            })
        };
        let cases: [(&[(&str, i64)], &str); 9] = [
            (&[("1", 1), ("2", 3)], "7"),
            (&[("2Gi", 1), ("4Gi", 3)], "14Gi"),
            (&[("500m", 1), ("1", 1)], "1500m"),
            (&[("1000", 2)], "2k"),
            (&[("1536", 1)], "1536"),
            (&[("512Mi", 1), ("1Gi", 1)], "1536Mi"),
            (&[("100m", 0)], "0"),
            (&[("1G", 2)], "2G"),
            (&[("0.5Gi", 1)], "512Mi"),
        ];
        for (parts, expected) in cases {
            assert_eq!(sum(parts).to_string(), expected, "{parts:?}");
        }
    }

    #[test]
    fn go_float_drops_whole_fraction() {
        assert_eq!(go_float(4.0), "4");
        assert_eq!(go_float(0.5), "0.5");
    }
}
