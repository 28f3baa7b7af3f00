//! The state query language (alpha): `{filter, sort, page}` parsed once and evaluated over
//! JSON values, for stores that do not push queries down.

use std::cmp::Ordering;

use serde_json::Value;

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    pub filter: Option<Filter>,
    pub sort: Vec<Sort>,
    pub limit: Option<usize>,
    pub token: Option<String>,
}

/// One page of rows and the token of the next page.
pub type Page<T> = (Vec<(T, Value)>, Option<String>);

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare(Op, String, Value),
    In(String, Vec<Value>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    pub key: String,
    pub descending: bool,
}

impl Query {
    /// Parses Dapr's query JSON; the error says what is wrong.
    pub fn parse(json: &[u8]) -> Result<Query, String> {
        let value: Value =
            serde_json::from_slice(json).map_err(|e| format!("query is not valid JSON: {e}"))?;
        let object = value.as_object().ok_or("query must be a JSON object")?;
        let filter = match object.get("filter") {
            None | Some(Value::Null) => None,
            Some(f) if f.as_object().is_some_and(|o| o.is_empty()) => None,
            Some(f) => Some(parse_filter(f)?),
        };
        let mut sort = Vec::new();
        if let Some(list) = object.get("sort") {
            for s in list.as_array().ok_or("sort must be an array")? {
                let key = s
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or("sort entries need a string \"key\"")?;
                let descending = match s.get("order").and_then(Value::as_str) {
                    None | Some("ASC") | Some("asc") => false,
                    Some("DESC") | Some("desc") => true,
                    Some(other) => return Err(format!("sort order {other:?}: use ASC or DESC")),
                };
                sort.push(Sort {
                    key: key.to_owned(),
                    descending,
                });
            }
        }
        let page = object.get("page");
        let limit = match page.and_then(|p| p.get("limit")) {
            None | Some(Value::Null) => None,
            Some(l) => match l.as_u64() {
                Some(0) => None,
                Some(n) => Some(usize::try_from(n).map_err(|_| "page.limit is too large")?),
                None => return Err("page.limit must be a non-negative integer".into()),
            },
        };
        let token = page
            .and_then(|p| p.get("token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(Query {
            filter,
            sort,
            limit,
            token,
        })
    }

    /// Filters, sorts and pages `(key, value)` rows; returns the page and the next token.
    pub fn run<T: Clone>(&self, rows: Vec<(T, Value)>) -> Result<Page<T>, String> {
        let mut rows: Vec<(T, Value)> = rows
            .into_iter()
            .filter(|(_, v)| self.filter.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        if !self.sort.is_empty() {
            rows.sort_by(|(_, a), (_, b)| {
                for s in &self.sort {
                    let ord = compare(lookup(a, &s.key), lookup(b, &s.key));
                    let ord = if s.descending { ord.reverse() } else { ord };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                Ordering::Equal
            });
        }
        let start = match &self.token {
            None => 0,
            Some(t) => t
                .parse::<usize>()
                .map_err(|_| format!("page token {t:?} is not one this store issued"))?,
        };
        let total = rows.len();
        let page: Vec<_> = rows
            .into_iter()
            .skip(start)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect();
        let next = start + page.len();
        let token = (self.limit.is_some() && next < total).then(|| next.to_string());
        Ok((page, token))
    }
}

fn parse_filter(value: &Value) -> Result<Filter, String> {
    let object = value
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or("a filter must be an object with exactly one operator")?;
    let Some((op, body)) = object.iter().next() else {
        return Err("a filter must have an operator".into());
    };
    let pair = |body: &Value| -> Result<(String, Value), String> {
        let o = body
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| format!("{op} needs an object with one field"))?;
        o.iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .ok_or_else(|| format!("{op} needs a field"))
    };
    let compare = |op| pair(body).map(|(k, v)| Filter::Compare(op, k, v));
    match op.as_str() {
        "EQ" => compare(Op::Eq),
        "NEQ" => compare(Op::Neq),
        "GT" => compare(Op::Gt),
        "GTE" => compare(Op::Gte),
        "LT" => compare(Op::Lt),
        "LTE" => compare(Op::Lte),
        "IN" => {
            let (key, values) = pair(body)?;
            let values = values
                .as_array()
                .cloned()
                .ok_or("IN needs an array of values")?;
            Ok(Filter::In(key, values))
        }
        "AND" | "OR" => {
            let list = body
                .as_array()
                .filter(|l| l.len() >= 2)
                .ok_or_else(|| format!("{op} needs an array of at least two filters"))?;
            let filters = list.iter().map(parse_filter).collect::<Result<_, _>>()?;
            Ok(if op == "AND" {
                Filter::And(filters)
            } else {
                Filter::Or(filters)
            })
        }
        other => Err(format!(
            "unknown filter operator {other:?}: use EQ, NEQ, GT, GTE, LT, LTE, IN, AND or OR"
        )),
    }
}

impl Filter {
    pub fn matches(&self, value: &Value) -> bool {
        match self {
            Filter::Compare(op, key, expected) => {
                let Some(actual) = lookup(value, key) else {
                    return *op == Op::Neq;
                };
                let ord = compare(Some(actual), Some(expected));
                match op {
                    Op::Eq => equal(actual, expected),
                    Op::Neq => !equal(actual, expected),
                    Op::Gt => ord == Ordering::Greater,
                    Op::Gte => ord != Ordering::Less,
                    Op::Lt => ord == Ordering::Less,
                    Op::Lte => ord != Ordering::Greater,
                }
            }
            Filter::In(key, values) => {
                lookup(value, key).is_some_and(|a| values.iter().any(|v| equal(a, v)))
            }
            Filter::And(filters) => filters.iter().all(|f| f.matches(value)),
            Filter::Or(filters) => filters.iter().any(|f| f.matches(value)),
        }
    }
}

/// Follows a dotted path (`person.org`) into a JSON value.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Numbers numerically, strings lexically; missing values sort first.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => match (a, b) {
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .partial_cmp(&y.as_f64())
                .unwrap_or(Ordering::Equal),
            (Value::String(x), Value::String(y)) => x.cmp(y),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            _ => a.to_string().cmp(&b.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows() -> Vec<(String, Value)> {
        vec![
            (
                "1".into(),
                json!({"person": {"org": "Dev Ops", "id": 1036}, "state": "CA"}),
            ),
            (
                "2".into(),
                json!({"person": {"org": "Hardware", "id": 1028}, "state": "WA"}),
            ),
            (
                "3".into(),
                json!({"person": {"org": "Dev Ops", "id": 1071}, "state": "NY"}),
            ),
            (
                "4".into(),
                json!({"person": {"org": "Finance", "id": 1007}, "state": "CA"}),
            ),
        ]
    }

    fn keys(q: &str) -> (Vec<String>, Option<String>) {
        let query = Query::parse(q.as_bytes()).unwrap();
        let (page, token) = query.run(rows()).unwrap();
        (page.into_iter().map(|(k, _)| k).collect(), token)
    }

    #[test]
    fn filters_sort_and_page() {
        assert_eq!(keys(r#"{"filter":{"EQ":{"state":"CA"}}}"#).0, ["1", "4"]);
        assert_eq!(
            keys(r#"{"filter":{"OR":[{"EQ":{"person.org":"Dev Ops"}},{"AND":[{"EQ":{"person.org":"Finance"}},{"IN":{"state":["CA","WA"]}}]}]},"sort":[{"key":"state","order":"DESC"},{"key":"person.id"}]}"#).0,
            ["3", "4", "1"]
        );
        assert_eq!(
            keys(r#"{"filter":{"GT":{"person.id":1030}}}"#).0,
            ["1", "3"]
        );
        let (first, token) = keys(r#"{"sort":[{"key":"person.id"}],"page":{"limit":3}}"#);
        assert_eq!(first, ["4", "2", "1"]);
        assert_eq!(token.as_deref(), Some("3"));
        let (rest, token) =
            keys(r#"{"sort":[{"key":"person.id"}],"page":{"limit":3,"token":"3"}}"#);
        assert_eq!((rest, token), (vec!["3".to_owned()], None));
    }

    #[test]
    fn bad_queries_say_why() {
        assert!(Query::parse(b"{").unwrap_err().contains("JSON"));
        assert!(
            Query::parse(br#"{"filter":{"LIKE":{"a":1}}}"#)
                .unwrap_err()
                .contains("LIKE")
        );
        assert!(
            Query::parse(br#"{"filter":{"AND":[{"EQ":{"a":1}}]}}"#)
                .unwrap_err()
                .contains("at least two")
        );
    }
}
