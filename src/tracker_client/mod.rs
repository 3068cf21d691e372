//! Talks to the tracker manager: one multiplexed connection, reconnecting, authenticated, subscribed.
