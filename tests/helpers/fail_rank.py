"""Run rewl with an exception injected on one rank at its third exchange round:
python fail_rank.py RANK DECK [rewl run arguments...]"""
import sys

import rewl.driver
from rewl.cli import main
from rewl.comm import env_rank

fail_rank = int(sys.argv[1])
real_exchange = rewl.driver.exchange_round


def failing_exchange(comm, round_index, *args, **kwargs):
    if comm.rank == fail_rank and round_index == 3:
        raise RuntimeError(f"injected failure on rank {comm.rank}")
    return real_exchange(comm, round_index, *args, **kwargs)


if env_rank() == fail_rank:
    rewl.driver.exchange_round = failing_exchange
sys.exit(main(["run", *sys.argv[2:]]))
