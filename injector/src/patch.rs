//! JSON Patch (RFC 6902) operations with JSON pointers (RFC 6901) built from tokens.

use serde::Serialize;
use serde_json::Value;

/// A JSON pointer, built token by token so `/` and `~` in keys (`dapr.io/app-id`) are escaped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pointer(String);

impl Pointer {
    /// The pointer to the whole document.
    pub fn root() -> Self {
        Self::default()
    }

    /// This pointer plus one token.
    pub fn push(&self, token: impl AsRef<str>) -> Self {
        let mut out = self.0.clone();
        out.push('/');
        for c in token.as_ref().chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
        Self(out)
    }

    /// This pointer plus an array index.
    pub fn index(&self, index: usize) -> Self {
        self.push(index.to_string())
    }

    /// This pointer plus `-` (append to an array).
    pub fn end(&self) -> Self {
        self.push("-")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One operation; the injector only adds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Operation {
    pub op: &'static str,
    pub path: String,
    pub value: Value,
}

impl Operation {
    pub fn add(path: &Pointer, value: impl Serialize) -> Self {
        Self {
            op: "add",
            path: path.0.clone(),
            // Serialising k8s-openapi types and JSON values cannot fail.
            value: serde_json::to_value(value).unwrap_or(Value::Null),
        }
    }
}

/// Appends `items` to the array at `path`: the whole array when it does not exist yet (so the
/// parent exists before its children), else one `add .../-` per item.
pub fn append_all<T: Serialize>(
    ops: &mut Vec<Operation>,
    path: &Pointer,
    exists: bool,
    items: &[T],
) {
    if items.is_empty() {
        return;
    }
    if exists {
        ops.extend(items.iter().map(|item| Operation::add(&path.end(), item)));
    } else {
        ops.push(Operation::add(path, items));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_escaped() {
        let p = Pointer::root()
            .push("metadata")
            .push("labels")
            .push("dapr.io/app-id");
        assert_eq!(p.as_str(), "/metadata/labels/dapr.io~1app-id");
        assert_eq!(Pointer::root().push("a~b/c").as_str(), "/a~0b~1c");
        assert_eq!(Pointer::root().push("x").index(3).end().as_str(), "/x/3/-");
    }

    #[test]
    fn append_creates_the_array_first() {
        let path = Pointer::root().push("spec").push("volumes");
        let mut ops = Vec::new();
        append_all(&mut ops, &path, false, &[1, 2]);
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            serde_json::json!([{"op":"add","path":"/spec/volumes","value":[1,2]}])
        );
        let mut ops = Vec::new();
        append_all(&mut ops, &path, true, &[1, 2]);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].path, "/spec/volumes/-");
        let mut ops = Vec::new();
        append_all::<u8>(&mut ops, &path, false, &[]);
        assert!(ops.is_empty());
    }
}
