//! Links `operator` with its functions in the order recorded in `link-order/operator.txt`.

#[path = "../link-order/link_order.rs"]
mod link_order;

fn main() {
    link_order::link_in_recorded_order("operator");
}
