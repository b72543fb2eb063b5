//! The admin API's bodies read as its JSON Schema says, where serde's derives differ:
//!
//! - whole numbers however JSON writes them: JSON Schema counts `7.0` as an integer, and
//!   clients generated from the schema may send one; serde's integers refuse it. The helpers
//!   take an integer, or a float with no fractional part, in range;
//! - objects only as objects: a derived struct also accepts a JSON array of its fields in
//!   order (`"budgets": [null, null]`), which the schema does not allow. [`Object`] and the
//!   `object*` helpers accept a JSON object and nothing else.

use std::marker::PhantomData;

use serde::{Deserialize, Deserializer};

/// A whole number read from an integer or an integral float.
struct Whole(i128);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Whole, E> {
                Ok(Whole(i128::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(i128::from(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Whole, E> {
                // Beyond ±2^63 no i64 or u64 field takes it anyway.
                const LIMIT: f64 = 18_446_744_073_709_551_616.0;
                if v.fract() == 0.0 && v.abs() < LIMIT {
                    #[expect(clippy::cast_possible_truncation, reason = "whole and in range")]
                    Ok(Whole(v as i128))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn narrow<T: TryFrom<i128>, E: serde::de::Error>(whole: Whole) -> Result<T, E> {
    T::try_from(whole.0).map_err(|_| E::custom(format!("{} is out of range", whole.0)))
}

/// An optional `u64`.
pub fn option_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Option::<Whole>::deserialize(deserializer)?
        .map(narrow)
        .transpose()
}

/// A `u64` that may be left out (`#[serde(default)]`) but, when present, is a number: `null`
/// is refused.
pub fn some_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    narrow(Whole::deserialize(deserializer)?).map(Some)
}

/// An optional `i64`.
pub fn option_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<Whole>::deserialize(deserializer)?
        .map(narrow)
        .transpose()
}

/// A present field, even as `null` (`Some(None)`: "remove"), of an optional `i64`.
pub fn present_i64<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<i64>>, D::Error> {
    option_i64(deserializer).map(Some)
}

/// A `T` that was written as a JSON object (never as an array of its fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Visitor(PhantomData))
            .map(Object)
    }
}

/// A struct field written as an object.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Object::deserialize(deserializer).map(|Object(value)| value)
}

/// An optional struct field written as an object (or `null`).
pub fn option_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<Object<T>>::deserialize(deserializer).map(|found| found.map(|Object(value)| value))
}

/// A list of structs, each written as an object.
pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    Vec::<Object<T>>::deserialize(deserializer)
        .map(|list| list.into_iter().map(|Object(value)| value).collect())
}

/// An optional list of structs, each written as an object.
pub fn option_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Option::<Vec<Object<T>>>::deserialize(deserializer)
        .map(|found| found.map(|list| list.into_iter().map(|Object(value)| value).collect()))
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "super::option_u64")]
        n: Option<u64>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Strict {
        #[serde(default, deserialize_with = "super::some_u64")]
        n: Option<u64>,
    }

    fn n(json: &str) -> Result<Option<u64>, serde_json::Error> {
        serde_json::from_str::<Holder>(json).map(|h| h.n)
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Pair {
        a: Option<u8>,
        b: Option<u8>,
    }

    #[test]
    fn an_object_is_read_from_an_object_only() {
        let read = |json: &str| serde_json::from_str::<super::Object<Pair>>(json);
        assert_eq!(
            read(r#"{"a": 1}"#).unwrap().0,
            Pair {
                a: Some(1),
                b: None
            }
        );
        assert!(
            serde_json::from_str::<Pair>("[null, null]").is_ok(),
            "what serde allows"
        );
        assert!(read("[null, null]").is_err());
        assert!(read("null").is_err());
    }

    #[test]
    fn integral_floats_are_whole_numbers_and_nothing_else_is() {
        assert_eq!(n(r#"{"n": 7}"#).unwrap(), Some(7));
        assert_eq!(n(r#"{"n": 7.0}"#).unwrap(), Some(7));
        assert_eq!(n(r#"{"n": 1e3}"#).unwrap(), Some(1000));
        assert_eq!(n(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(n("{}").unwrap(), None);
        let some = |json: &str| serde_json::from_str::<Strict>(json).map(|h| h.n);
        assert_eq!(some(r#"{"n": 7.0}"#).unwrap(), Some(7));
        assert_eq!(some("{}").unwrap(), None);
        assert!(some(r#"{"n": null}"#).is_err());
        for refused in [
            r#"{"n": 7.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 1e30}"#,
            r#"{"n": "7"}"#,
        ] {
            assert!(n(refused).is_err(), "{refused}");
        }
    }
}
