use super::*;
use serde_json::json;

fn component(name: &str, rv: &str, scopes: &[&str]) -> Value {
    json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
        "scopes": scopes,
        "spec": {"type": "state.redis", "version": "v1", "metadata": [{"name": "revision", "value": rv}]}
    })
}

fn filter(app: &str) -> Filter {
    Filter {
        namespace: "ns".into(),
        app_id: app.into(),
        name: None,
    }
}

fn drain(sub: &mut Subscription) -> Vec<(EventKind, String, String)> {
    let mut out: Vec<_> = sub
        .replay
        .drain(..)
        .map(|e| {
            (
                e.kind,
                e.object.name.clone(),
                e.object.resource_version.clone(),
            )
        })
        .collect();
    while let Some(e) = sub.live.try_recv() {
        out.push((
            e.kind,
            e.object.name.clone(),
            e.object.resource_version.clone(),
        ));
    }
    out
}

fn synced_hub() -> Arc<Hub> {
    let hub = Hub::new("components");
    hub.relist_start();
    hub.relist_done();
    hub
}

#[test]
fn the_per_app_transform_is_daprs() {
    let obj = |scopes: &[&str]| Some(Arc::new(Object::new(component("c", "1", scopes))));
    let (all, a_only, b_only) = (obj(&[]), obj(&["a"]), obj(&["b"]));
    let kind = |old: &Option<Arc<Object>>, new: &Option<Arc<Object>>| {
        event_for(old.as_ref(), new.as_ref(), "a").map(|e| e.kind)
    };
    assert_eq!(kind(&None, &all), Some(EventKind::Created));
    assert_eq!(kind(&None, &b_only), None, "created out of scope");
    assert_eq!(kind(&a_only, &all), Some(EventKind::Updated));
    assert_eq!(
        kind(&b_only, &a_only),
        Some(EventKind::Created),
        "joined the scopes"
    );
    assert_eq!(
        kind(&a_only, &b_only),
        Some(EventKind::Deleted),
        "left the scopes"
    );
    assert_eq!(kind(&b_only, &b_only), None);
    assert_eq!(kind(&a_only, &None), Some(EventKind::Deleted));
    assert_eq!(kind(&b_only, &None), None);
    let left = event_for(a_only.as_ref(), b_only.as_ref(), "a").unwrap();
    assert_eq!(left.object.scopes, ["a"], "DELETED carries the old object");
}

#[test]
fn streams_see_creates_updates_scope_changes_and_deletes_in_order() {
    let hub = synced_hub();
    let mut sub = hub.subscribe(filter("a"));
    hub.apply(component("c", "1", &[]));
    hub.apply(component("c", "1", &[])); // resync: same resourceVersion, dropped
    hub.apply(component("c", "2", &["a"]));
    hub.apply(component("c", "3", &["b"]));
    hub.apply(component("c", "4", &["b"]));
    hub.apply(component("c", "5", &["a", "b"]));
    hub.delete(component("c", "5", &["a", "b"]));
    hub.apply(json!({"metadata": {"name": "other-ns", "namespace": "x", "resourceVersion": "9"}}));
    use EventKind::*;
    let seen: Vec<_> = drain(&mut sub)
        .into_iter()
        .map(|(k, _, rv)| (k, rv))
        .collect();
    assert_eq!(
        seen,
        [
            (Created, "1".into()),
            (Updated, "2".into()),
            (Deleted, "2".into()),
            (Created, "5".into()),
            (Deleted, "5".into()),
        ]
    );
}

#[test]
fn a_stream_after_a_list_replays_what_changed_in_between() {
    let hub = synced_hub();
    hub.apply(component("before", "1", &[]));
    let listed = hub.list("ns", Some("a"));
    assert_eq!(listed.len(), 1);
    hub.apply(component("between", "2", &[]));
    hub.apply(component("hidden", "3", &["b"]));
    hub.apply(component("before", "4", &[]));
    let mut sub = hub.subscribe(filter("a"));
    hub.apply(component("after", "5", &[]));
    let names: Vec<_> = drain(&mut sub)
        .into_iter()
        .map(|(k, n, _)| (k, n))
        .collect();
    assert_eq!(
        names,
        [
            (EventKind::Created, "between".into()),
            (EventKind::Updated, "before".into()),
            (EventKind::Created, "after".into()),
        ]
    );
    // The position is consumed: a second stream of the same app starts live.
    let mut again = hub.subscribe(filter("a"));
    assert!(drain(&mut again).is_empty());
}

#[test]
fn without_a_list_a_stream_starts_live_as_in_dapr() {
    let hub = synced_hub();
    hub.apply(component("c", "1", &[]));
    let mut sub = hub.subscribe(filter("a"));
    assert!(drain(&mut sub).is_empty());
}

#[test]
fn a_stream_that_falls_behind_is_cut_off_and_others_continue() {
    let hub = synced_hub();
    let mut slow = hub.subscribe(filter("a"));
    let mut fast = hub.subscribe(filter("b"));
    for i in 0..=SUBSCRIBER_BUFFER {
        hub.apply(component("c", &i.to_string(), &[]));
        while fast.live.try_recv().is_some() {}
    }
    assert!(slow.live.fell_behind());
    assert!(!fast.live.fell_behind());
    assert_eq!(hub.subscribers(), 1);
    let mut received = 0;
    while slow.live.try_recv().is_some() {
        received += 1;
    }
    assert_eq!(
        received, SUBSCRIBER_BUFFER,
        "buffered events are still delivered"
    );
}

#[test]
fn a_relist_publishes_what_changed_while_disconnected() {
    let hub = synced_hub();
    hub.apply(component("kept", "1", &[]));
    hub.apply(component("changed", "2", &[]));
    hub.apply(component("gone", "3", &[]));
    let mut sub = hub.subscribe(filter("a"));
    hub.relist_start();
    hub.relist_item(component("kept", "1", &[]));
    hub.relist_item(component("changed", "7", &[]));
    hub.relist_item(component("new", "8", &[]));
    assert!(drain(&mut sub).is_empty(), "nothing is published mid-list");
    hub.relist_done();
    let mut seen = drain(&mut sub);
    seen.sort();
    assert_eq!(
        seen,
        [
            (EventKind::Created, "new".into(), "8".into()),
            (EventKind::Updated, "changed".into(), "7".into()),
            (EventKind::Deleted, "gone".into(), "3".into()),
        ]
    );
    let names: Vec<_> = hub
        .list("ns", None)
        .iter()
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(names, ["changed", "kept", "new"]);
}

#[test]
fn a_name_filter_keeps_only_that_object() {
    let hub = synced_hub();
    let mut sub = hub.subscribe(Filter {
        name: Some("appconfig".into()),
        ..filter("a")
    });
    hub.apply(component("appconfig", "1", &[]));
    hub.apply(component("other", "2", &[]));
    let names: Vec<_> = drain(&mut sub).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(names, ["appconfig"]);
}

#[test]
fn status_only_changes_are_stored_but_not_published() {
    let hub = synced_hub();
    let mut sub = hub.subscribe(filter("a"));
    hub.apply(component("c", "1", &[]));
    let mut with_status = component("c", "1", &[]);
    with_status["metadata"]["resourceVersion"] = json!("2");
    with_status["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    with_status["metadata"]["managedFields"] = json!([{"manager": "x"}]);
    hub.apply(with_status);
    let mut labelled = component("c", "1", &[]);
    labelled["metadata"]["resourceVersion"] = json!("3");
    labelled["metadata"]["labels"] = json!({"team": "a"});
    hub.apply(labelled);
    let seen: Vec<_> = drain(&mut sub)
        .into_iter()
        .map(|(k, _, rv)| (k, rv))
        .collect();
    assert_eq!(
        seen,
        [
            (EventKind::Created, "1".into()),
            (EventKind::Updated, "3".into())
        ]
    );
    assert_eq!(
        hub.get("ns", "c").unwrap().resource_version,
        "3",
        "the latest is stored"
    );
}
