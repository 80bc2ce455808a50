//! Reading an internally tagged enum (`#[serde(tag = "...")]`) tag first.
//!
//! serde's derived reader of an internally tagged enum buffers every object whole
//! (its strings copied into a tree of `Content` values) before it reads the variant
//! from that tree, and a nested one (a batch of commands) is buffered again at every
//! level. Written by serde's derive, the tag is the object's first field: a
//! [`TagFirst`] type takes it and reads the rest of the object straight into the
//! variant's fields. An object whose tag is elsewhere (another writer, a hand-edited
//! file) is still read, through a [`serde_json::Value`]: the format is the same.
//!
//! A type implements [`TagFirst::read`] with one body struct per variant shape (the
//! variant's fields, with the same names and serde attributes), and its `Deserialize`
//! as `d.deserialize_map(TagFirstVisitor::new())`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// An enum written internally tagged, read tag first.
pub trait TagFirst: Sized {
    /// The tag's field name.
    const TAG: &'static str;
    /// What the tag names (a fieldless enum deriving `Deserialize` with the same
    /// `rename_all` as the enum).
    type Tag: DeserializeOwned;
    /// The variant `tag` names, its fields read from `rest` (the rest of the object).
    fn read<'de, D: Deserializer<'de>>(tag: Self::Tag, rest: D) -> Result<Self, D::Error>;
}

/// The visitor a [`TagFirst`] type's `Deserialize` hands to `deserialize_map`.
pub struct TagFirstVisitor<T>(PhantomData<T>);

impl<T> TagFirstVisitor<T> {
    pub fn new() -> Self {
        TagFirstVisitor(PhantomData)
    }
}

impl<T> Default for TagFirstVisitor<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'de, T: TagFirst> Visitor<'de> for TagFirstVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object tagged by its `{}` field", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let first = match map.next_key_seed(KeySeed(T::TAG))? {
            None => return Err(de::Error::missing_field(T::TAG)),
            Some(Key::Tag) => {
                let tag: T::Tag = map.next_value()?;
                return T::read(tag, de::value::MapAccessDeserializer::new(map));
            }
            Some(Key::Other(k)) => k,
        };
        // The tag comes later: gather the object, then read it.
        let mut obj = serde_json::Map::new();
        obj.insert(first, map.next_value()?);
        while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
            obj.insert(k, v);
        }
        let tag = obj
            .remove(T::TAG)
            .ok_or_else(|| de::Error::missing_field(T::TAG))?;
        let tag = T::Tag::deserialize(tag).map_err(de::Error::custom)?;
        T::read(tag, serde_json::Value::Object(obj).into_deserializer()).map_err(de::Error::custom)
    }
}

/// An object's key: the tag, or another field's name.
enum Key {
    Tag,
    Other(String),
}

struct KeySeed(&'static str);

impl<'de> de::DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(if v == self.0 {
            Key::Tag
        } else {
            Key::Other(v.to_string())
        })
    }
}

/// `value` (an object written by this release) as another writer might send it: a
/// field this release does not know (`unknown`, `"name":value`) put first, then the
/// rest with the tag last, and the same with the tag first. The tests of every
/// [`TagFirst`] type read both back. None if `value` is not an object with the tag.
pub fn other_writers_forms(
    value: &serde_json::Value,
    tag: &str,
    unknown: &str,
) -> Option<[String; 2]> {
    let obj = value.as_object()?;
    let tagged = format!("{}:{}", serde_json::Value::from(tag), obj.get(tag)?);
    let mut fields = vec![unknown.to_string()];
    fields.extend(
        obj.iter()
            .filter(|(k, _)| *k != tag)
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str()))),
    );
    let fields = fields.join(",");
    Some([
        format!("{{{fields},{tagged}}}"),
        format!("{{{tagged},{fields}}}"),
    ])
}
