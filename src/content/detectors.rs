//! The redaction detectors: a regex finds candidates, a check confirms them (a card's Luhn
//! sum, a phone number's digit count), so ordinary numbers are left alone.

use regex::{Captures, Regex};

use crate::config::Detector;

/// The order detectors run in.
pub const ORDER: [Detector; 4] = [
    Detector::ApiKey,
    Detector::Card,
    Detector::Email,
    Detector::Phone,
];

/// One detector, compiled.
pub struct Matcher {
    detector: Detector,
    /// Always compiles (each pattern is a constant the unit tests exercise).
    pattern: Option<Regex>,
}

impl Matcher {
    pub fn new(detector: Detector) -> Self {
        let pattern = match detector {
            Detector::Email => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            // Digits in groups, optionally after a country code or an area code in brackets.
            Detector::Phone => {
                r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){2,4}"
            }
            Detector::Card => r"\b\d(?:[ -]?\d){12,18}\b",
            Detector::ApiKey => {
                r"\b(?:(?:sk|pk|rk|tg)[-_][A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b"
            }
        };
        Self {
            detector,
            pattern: Regex::new(pattern).ok(),
        }
    }

    /// `text` with every confirmed match replaced, or `None` when nothing matched.
    pub fn redact(&self, text: &str) -> Option<String> {
        let pattern = self.pattern.as_ref()?;
        let mut changed = false;
        let replacement = format!("[REDACTED:{}]", self.detector.name());
        let redacted = pattern.replace_all(text, |caps: &Captures<'_>| {
            let found = &caps[0];
            if self.confirms(found) {
                changed = true;
                replacement.clone()
            } else {
                found.to_owned()
            }
        });
        changed.then(|| redacted.into_owned())
    }

    fn confirms(&self, found: &str) -> bool {
        let digits = || found.chars().filter(char::is_ascii_digit);
        match self.detector {
            Detector::Card => luhn_valid(digits()),
            Detector::Phone => (9..=15).contains(&digits().count()),
            Detector::Email | Detector::ApiKey => true,
        }
    }
}

/// The Luhn checksum of a 13 to 19 digit number.
fn luhn_valid(digits: impl DoubleEndedIterator<Item = char>) -> bool {
    let mut sum = 0u32;
    let mut count = 0;
    for (index, digit) in digits.rev().enumerate() {
        let mut value = digit.to_digit(10).unwrap_or(0);
        if index % 2 == 1 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
        count += 1;
    }
    (13..=19).contains(&count) && sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_need_a_valid_luhn_sum() {
        let card = Matcher::new(Detector::Card);
        assert!(card.redact("4111-1111-1111-1111").is_some());
        assert!(card.redact("5500 0000 0000 0004").is_some());
        assert!(card.redact("4111 1111 1111 1112").is_none());
        assert!(card.redact("12345").is_none());
    }

    #[test]
    fn phones_need_nine_to_fifteen_digits() {
        let phone = Matcher::new(Detector::Phone);
        assert!(phone.redact("+1 (415) 555-2671").is_some());
        assert!(phone.redact("020 7946 0958").is_some());
        assert!(phone.redact("in 2024 we sold 300").is_none());
    }

    #[test]
    fn emails_and_key_shapes() {
        assert_eq!(
            Matcher::new(Detector::Email).redact("to a.b+c@mail.example.org now"),
            Some("to [REDACTED:email] now".to_owned())
        );
        let key = Matcher::new(Detector::ApiKey);
        assert!(key.redact("AKIAIOSFODNN7EXAMPLE").is_some());
        assert!(key.redact("sk-proj-0123456789abcdefXYZ").is_some());
        assert!(key.redact("a skeleton key").is_none());
    }
}
