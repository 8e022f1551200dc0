//! Typed access to an API call's named params, with errors that name the param.

use crate::error::EngineError;
use serde_json::{Map, Value};

/// The named params of one call (the server already refused unknown names).
pub struct Params(pub Map<String, Value>);

impl Params {
    /// The value, treating `null` as absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn missing(name: &str, what: &str) -> EngineError {
        EngineError::invalid_param(name, format!("param '{name}' is required: pass {what}"))
    }

    fn wrong(name: &str, what: &str) -> EngineError {
        EngineError::invalid_param(name, format!("param '{name}' must be {what}"))
    }

    pub fn opt_string(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Self::wrong(name, "a string")),
        }
    }

    pub fn string(&self, name: &str) -> Result<String, EngineError> {
        self.opt_string(name)?
            .ok_or_else(|| Self::missing(name, "a string"))
    }

    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, EngineError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                        .map(|f| f as u64)
                })
                .map(Some)
                .ok_or_else(|| Self::wrong(name, "a non-negative integer")),
        }
    }

    pub fn u64_or(&self, name: &str, default: u64) -> Result<u64, EngineError> {
        Ok(self.opt_u64(name)?.unwrap_or(default))
    }

    pub fn i64_or(&self, name: &str, default: i64) -> Result<i64, EngineError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| Self::wrong(name, "an integer")),
        }
    }

    /// An object id: an integer, or a string holding one (JetStream's ids are strings).
    pub fn id(&self, name: &str) -> Result<i64, EngineError> {
        match self.get(name) {
            None => Err(Self::missing(name, "the id")),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| Self::wrong(name, "an id (an integer or a string of digits)")),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map_err(|_| Self::wrong(name, "an id (an integer or a string of digits)")),
            Some(_) => Err(Self::wrong(
                name,
                "an id (an integer or a string of digits)",
            )),
        }
    }

    pub fn object(&self, name: &str) -> Result<&Map<String, Value>, EngineError> {
        match self.get(name) {
            None => Err(Self::missing(name, "an object")),
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(Self::wrong(name, "an object")),
        }
    }

    pub fn array(&self, name: &str) -> Result<&Vec<Value>, EngineError> {
        match self.get(name) {
            None => Err(Self::missing(name, "a list")),
            Some(Value::Array(list)) => Ok(list),
            Some(_) => Err(Self::wrong(name, "a list")),
        }
    }
}

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_accept_numbers_and_strings() {
        let p = Params(
            json!({"a": 3, "b": "4", "c": "x", "d": null})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(p.id("a").unwrap(), 3);
        assert_eq!(p.id("b").unwrap(), 4);
        assert_eq!(p.id("c").unwrap_err().data.unwrap()["field"], "c");
        assert!(p.id("d").unwrap_err().message.contains("'d'"));
        assert_eq!(p.u64_or("d", 7).unwrap(), 7);
    }
}
