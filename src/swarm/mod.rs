//! Everything librqbit: the BitTorrent session, building and seeding edit torrents, on-demand ranged reads.
