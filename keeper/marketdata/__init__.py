"""Market data: file formats and loaders (price CSV files, the daily ETH / BTC history), and the
price paths a replay steps through. Reads files; hands plain arrays and dataclasses to
`keeper.risk`, which does no I/O."""
