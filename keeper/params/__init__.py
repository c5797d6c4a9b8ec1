"""Timelocked risk parameter changes: a change file (`changes`), the on-chain bounds it must
respect (`bounds`), the current values (`current`), the setter calls (`plan`), a rehearsal on
an Anvil fork (`rehearsal`) and the timelock operations (`timelock`). `keeper params` drives
them."""
