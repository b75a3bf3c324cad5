"""The ledger: the one place where token balances live and move.

Every balance of every holder (agent wallets, protocol reserves, insurance funds, fee and
escrow accounts, bad-debt accounts) is one cell of an int64 array ``balance[holder, asset]``
in the asset's smallest unit. Tokens move only through :meth:`Ledger.transfer` and
:meth:`Ledger.transfer_many`, and are created or destroyed only through :meth:`Ledger.mint`
and :meth:`Ledger.burn`, which record why. Conservation is therefore exact: for every asset,
the sum over holders equals minted minus burned, and :meth:`Ledger.check_conservation`
verifies it with integer arithmetic.

Compiled kernels (the matching engine's batch loop, for instance) cannot call Python methods
per fill without losing their speed. They receive the balance array from
:meth:`Ledger.kernel_balances` and move tokens only with :func:`kernel_transfer`, the same
rule (no negative balance, nothing moves on refusal) compiled by numba. Kernels never mint
or burn, so conservation still holds exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numba
import numpy as np

__all__ = [
    "AssetSpec",
    "ConservationError",
    "InsufficientBalanceError",
    "Ledger",
    "LedgerError",
    "LedgerSnapshot",
    "kernel_transfer",
]

_INT64_MAX = np.iinfo(np.int64).max


class LedgerError(ValueError):
    """A ledger operation was refused; nothing moved."""


class InsufficientBalanceError(LedgerError):
    """A transfer or burn would have left a balance negative."""


class ConservationError(AssertionError):
    """The balances of an asset no longer sum to minted minus burned."""


@dataclasses.dataclass(frozen=True)
class AssetSpec:
    """An asset the ledger keeps balances of.

    Attributes:
        symbol: Unique ticker, e.g. ``"USDC"``.
        decimals: Number of decimals of the smallest unit (6 for USDC, 9 for ETH-like assets:
            18 would overflow int64 for realistic totals).
    """

    symbol: str
    decimals: int

    @property
    def unit(self) -> int:
        """Number of smallest units in one whole token."""
        return 10**self.decimals


@dataclasses.dataclass(frozen=True)
class LedgerSnapshot:
    """State captured by :meth:`Ledger.snapshot`."""

    balance: np.ndarray
    n_holders: int
    minted: np.ndarray
    burned: np.ndarray
    journal_length: int


@dataclasses.dataclass(frozen=True)
class _HolderBlock:
    prefix: str
    start: int
    count: int
    single: bool


@numba.njit(cache=True, nogil=True)
def kernel_transfer(
    balance: np.ndarray, src: int, dst: int, asset: int, amount: int
) -> bool:  # pragma: no cover - compiled
    """Move ``amount`` of ``asset`` from ``src`` to ``dst`` inside a compiled kernel.

    The compiled twin of :meth:`Ledger.transfer` for kernels that hold the array returned by
    :meth:`Ledger.kernel_balances`. Returns ``False`` and moves nothing when the amount is
    negative or exceeds the source balance.
    """
    if amount < 0 or balance[src, asset] < amount:
        return False
    balance[src, asset] -= amount
    balance[dst, asset] += amount
    return True


class Ledger:
    """Integer token balances of every holder, with exact conservation.

    Args:
        assets: The assets, in the order that defines their integer ids.
        capacity: Initial number of holder rows to allocate (grows by doubling).

    Raises:
        LedgerError: If symbols repeat or decimals are outside 0..18.

    Examples:
        >>> ledger = Ledger([AssetSpec("USDC", 6)])
        >>> alice, bob = ledger.add_holder("alice"), ledger.add_holder("bob")
        >>> ledger.mint(alice, 0, 5_000_000, reason="endowment")
        >>> ledger.transfer(alice, bob, 0, 2_000_000)
        >>> ledger.balance(bob, 0)
        2000000
    """

    def __init__(self, assets: Sequence[AssetSpec], capacity: int = 64) -> None:
        symbols = [a.symbol for a in assets]
        if len(set(symbols)) != len(symbols):
            raise LedgerError(f"asset symbols must be unique, got {symbols}")
        for a in assets:
            if not 0 <= a.decimals <= 18:
                raise LedgerError(f"decimals of {a.symbol} must be in 0..18, got {a.decimals}")
        self.assets: tuple[AssetSpec, ...] = tuple(assets)
        self._asset_ids = {s: i for i, s in enumerate(symbols)}
        self._balance = np.zeros((max(int(capacity), 1), len(self.assets)), dtype=np.int64)
        self._n_holders = 0
        self._blocks: list[_HolderBlock] = []
        self._single_ids: dict[str, int] = {}
        self._block_by_prefix: dict[str, _HolderBlock] = {}
        self.minted = np.zeros(len(self.assets), dtype=np.int64)
        self.burned = np.zeros(len(self.assets), dtype=np.int64)
        #: Every mint and burn: (holder, asset, signed amount, reason), in order.
        self.journal: list[tuple[int, int, int, str]] = []

    # ----------------------------------------------------------------- holders and assets
    @property
    def n_holders(self) -> int:
        """Number of registered holders."""
        return self._n_holders

    @property
    def n_assets(self) -> int:
        """Number of assets."""
        return len(self.assets)

    def asset_id(self, symbol: str) -> int:
        """Integer id of an asset symbol.

        Raises:
            LedgerError: If the symbol is unknown.
        """
        try:
            return self._asset_ids[symbol]
        except KeyError:
            raise LedgerError(
                f"unknown asset {symbol!r}; known assets are {sorted(self._asset_ids)}"
            ) from None

    def _reserve_rows(self, count: int) -> int:
        start = self._n_holders
        need = start + count
        if need > self._balance.shape[0]:
            rows = max(need, 2 * self._balance.shape[0])
            grown = np.zeros((rows, self.n_assets), dtype=np.int64)
            grown[:start] = self._balance[:start]
            self._balance = grown
        self._n_holders = need
        return start

    def _check_new_name(self, name: str) -> None:
        if not name or name in self._single_ids or name in self._block_by_prefix:
            raise LedgerError(f"holder name must be new and non-empty, got {name!r}")

    def add_holder(self, name: str) -> int:
        """Register one holder (a wallet or a protocol account) and return its id.

        Raises:
            LedgerError: If the name is empty or already used.
        """
        self._check_new_name(name)
        start = self._reserve_rows(1)
        block = _HolderBlock(name, start, 1, True)
        self._blocks.append(block)
        self._single_ids[name] = start
        return start

    def add_holders(self, prefix: str, count: int) -> int:
        """Register ``count`` holders named ``prefix[0]`` ... and return the first id.

        Populations of 10^4 to 10^6 accounts register as one block, so no per-account
        Python object or string is created.

        Raises:
            LedgerError: If the prefix is already used or ``count`` is not positive.
        """
        if count <= 0:
            raise LedgerError(f"count must be positive, got {count}")
        self._check_new_name(prefix)
        start = self._reserve_rows(int(count))
        block = _HolderBlock(prefix, start, int(count), False)
        self._blocks.append(block)
        self._block_by_prefix[prefix] = block
        return start

    def holder_id(self, name: str) -> int:
        """Id of a holder given its name (``"aave:reserve"`` or ``"leveraged[12]"``).

        Raises:
            LedgerError: If no holder has that name.
        """
        if name in self._single_ids:
            return self._single_ids[name]
        if name.endswith("]") and "[" in name:
            prefix, _, index = name[:-1].rpartition("[")
            block = self._block_by_prefix.get(prefix)
            if block is not None and index.isdigit() and int(index) < block.count:
                return block.start + int(index)
        raise LedgerError(f"unknown holder {name!r}")

    def holder_name(self, holder: int) -> str:
        """Name of a holder id."""
        self._check_holder(holder)
        lo, hi = 0, len(self._blocks)
        while hi - lo > 1:  # blocks are sorted by start: binary search
            mid = (lo + hi) // 2
            if self._blocks[mid].start <= holder:
                lo = mid
            else:
                hi = mid
        block = self._blocks[lo]
        return block.prefix if block.single else f"{block.prefix}[{holder - block.start}]"

    def holder_names(self) -> list[str]:
        """Names of all holders, in id order (one pass over the blocks, no search)."""
        names: list[str] = []
        for block in self._blocks:
            if block.single:
                names.append(block.prefix)
            else:
                names.extend(f"{block.prefix}[{i}]" for i in range(block.count))
        return names

    def _check_holder(self, holder: int) -> None:
        if not 0 <= holder < self._n_holders:
            raise LedgerError(f"unknown holder id {holder}; {self._n_holders} holders exist")

    def _check_asset(self, asset: int) -> None:
        if not 0 <= asset < self.n_assets:
            raise LedgerError(f"unknown asset id {asset}; {self.n_assets} assets exist")

    # ----------------------------------------------------------------- reading
    def balance(self, holder: int, asset: int) -> int:
        """Balance of one holder in one asset, in smallest units."""
        self._check_holder(holder)
        self._check_asset(asset)
        return int(self._balance[holder, asset])

    @property
    def balances(self) -> np.ndarray:
        """Read-only view of ``balance[holder, asset]`` for all registered holders."""
        view = self._balance[: self._n_holders]
        view = view.view()
        view.flags.writeable = False
        return view

    def kernel_balances(self) -> np.ndarray:
        """The writable balance array, for compiled kernels that use :func:`kernel_transfer`.

        Only kernels that move tokens exclusively with :func:`kernel_transfer` may take it. The
        array is replaced when holders are added, so take it again for every kernel call.
        """
        return self._balance

    def supply(self, asset: int) -> int:
        """Total minted minus burned of an asset."""
        self._check_asset(asset)
        return int(self.minted[asset] - self.burned[asset])

    # ----------------------------------------------------------------- moving
    def _describe(self, holder: int, asset: int) -> str:
        return f"holder {self.holder_name(holder)!r}, asset {self.assets[asset].symbol}"

    def transfer(self, src: int, dst: int, asset: int, amount: int) -> None:
        """Move ``amount`` smallest units of ``asset`` from ``src`` to ``dst``.

        Raises:
            InsufficientBalanceError: If ``src`` holds less than ``amount`` (nothing moves).
            LedgerError: If the amount is negative or a holder or asset is unknown.
        """
        self._check_holder(src)
        self._check_holder(dst)
        self._check_asset(asset)
        amount = int(amount)
        if amount < 0:
            raise LedgerError(f"transfer amount must be >= 0, got {amount}")
        have = int(self._balance[src, asset])
        if have < amount:
            raise InsufficientBalanceError(
                f"transfer refused: {self._describe(src, asset)} has balance {have}, "
                f"amount {amount}"
            )
        self._balance[src, asset] -= amount
        self._balance[dst, asset] += amount

    def transfer_many(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        asset: np.ndarray,
        amount: np.ndarray,
    ) -> None:
        """Apply many transfers atomically, as one settlement block.

        The transfers are netted, then applied together: the batch is refused as a whole
        (nothing moves) if any resulting balance would be negative. This is the semantics of a
        block of transactions settled at once; the order inside the batch does not matter.

        Args:
            src: Source holder ids.
            dst: Destination holder ids.
            asset: Asset ids (broadcast against the others).
            amount: Non-negative amounts in smallest units.

        Raises:
            InsufficientBalanceError: If a balance would go negative; names the first one.
            LedgerError: If an amount is negative or an id is out of range.
        """
        src, dst, asset, amount = np.broadcast_arrays(
            np.asarray(src, dtype=np.int64),
            np.asarray(dst, dtype=np.int64),
            np.asarray(asset, dtype=np.int64),
            np.asarray(amount, dtype=np.int64),
        )
        if src.size == 0:
            return
        if (amount < 0).any():
            raise LedgerError(f"transfer amounts must be >= 0, got {int(amount.min())}")
        for ids, bound, what in (
            (src, self._n_holders, "holder"),
            (dst, self._n_holders, "holder"),
            (asset, self.n_assets, "asset"),
        ):
            if ids.min() < 0 or ids.max() >= bound:
                raise LedgerError(f"unknown {what} id in batch; valid ids are 0..{bound - 1}")
        delta = np.zeros((self._n_holders, self.n_assets), dtype=np.int64)
        np.subtract.at(delta, (src, asset), amount)
        np.add.at(delta, (dst, asset), amount)
        after = self._balance[: self._n_holders] + delta
        negative = np.argwhere(after < 0)
        if negative.size:
            h, a = (int(x) for x in negative[0])
            raise InsufficientBalanceError(
                f"batch transfer refused: {self._describe(h, a)} has balance "
                f"{int(self._balance[h, a])}, net outflow {-int(delta[h, a])}"
            )
        self._balance[: self._n_holders] = after

    def mint(self, holder: int, asset: int, amount: int, reason: str) -> None:
        """Create ``amount`` new units of ``asset`` in ``holder``'s balance.

        Args:
            holder: Receiving holder id.
            asset: Asset id.
            amount: Non-negative amount in smallest units.
            reason: Why the tokens are created (recorded in :attr:`journal`).

        Raises:
            LedgerError: If the amount is negative, the reason empty, or supply would overflow.
        """
        self._check_holder(holder)
        self._check_asset(asset)
        amount = int(amount)
        if amount < 0:
            raise LedgerError(f"mint amount must be >= 0, got {amount}")
        if not reason:
            raise LedgerError("mint needs a reason")
        if int(self.minted[asset]) + amount > _INT64_MAX:
            raise LedgerError(
                f"minting {amount} of {self.assets[asset].symbol} would overflow int64"
            )
        self._balance[holder, asset] += amount
        self.minted[asset] += amount
        self.journal.append((holder, asset, amount, reason))

    def mint_block(self, first: int, count: int, asset: int, amount_each: int, reason: str) -> None:
        """Mint ``amount_each`` to each of ``count`` consecutive holders from ``first``.

        One vectorised write and one journal line (holder ``first``, the total amount, and
        the reason with the number of holders), so endowing a population of 10^6 accounts
        costs one numpy operation instead of 10^6 journal rows.

        Raises:
            LedgerError: As :meth:`mint`, or if the block runs past the registered holders.
        """
        self._check_holder(first)
        self._check_holder(first + count - 1)
        self._check_asset(asset)
        amount_each, count = int(amount_each), int(count)
        if amount_each < 0 or count < 1:
            raise LedgerError(
                f"mint_block needs amount_each >= 0 and count >= 1, got {amount_each} and {count}"
            )
        if not reason:
            raise LedgerError("mint needs a reason")
        total = amount_each * count
        if int(self.minted[asset]) + total > _INT64_MAX:
            raise LedgerError(
                f"minting {total} of {self.assets[asset].symbol} would overflow int64"
            )
        self._balance[first : first + count, asset] += amount_each
        self.minted[asset] += total
        self.journal.append((first, asset, total, f"{reason} ({count} holders)"))

    def burn(self, holder: int, asset: int, amount: int, reason: str) -> None:
        """Destroy ``amount`` units of ``asset`` from ``holder``'s balance.

        Raises:
            InsufficientBalanceError: If the holder has less than ``amount`` (nothing burns).
            LedgerError: If the amount is negative or the reason empty.
        """
        self._check_holder(holder)
        self._check_asset(asset)
        amount = int(amount)
        if amount < 0:
            raise LedgerError(f"burn amount must be >= 0, got {amount}")
        if not reason:
            raise LedgerError("burn needs a reason")
        have = int(self._balance[holder, asset])
        if have < amount:
            raise InsufficientBalanceError(
                f"burn refused: {self._describe(holder, asset)} has balance {have}, amount {amount}"
            )
        self._balance[holder, asset] -= amount
        self.burned[asset] += amount
        self.journal.append((holder, asset, -amount, reason))

    # ----------------------------------------------------------------- atomic actions
    def snapshot(self) -> LedgerSnapshot:
        """Capture every balance, supply and the journal length, for :meth:`restore`.

        Used to revert an action that must be atomic (a flash loan that is not repaid undoes
        everything done with the borrowed funds).
        """
        n = self._n_holders
        return LedgerSnapshot(
            self._balance[:n].copy(), n, self.minted.copy(), self.burned.copy(), len(self.journal)
        )

    def restore(self, snap: LedgerSnapshot) -> None:
        """Return to the state captured by :meth:`snapshot`.

        Holders registered since the snapshot stay registered, with zero balances.
        """
        self._balance[: snap.n_holders] = snap.balance
        self._balance[snap.n_holders : self._n_holders] = 0
        self.minted[:] = snap.minted
        self.burned[:] = snap.burned
        del self.journal[snap.journal_length :]

    # ----------------------------------------------------------------- invariants
    def check_conservation(self) -> None:
        """Verify exactly that each asset's balances sum to minted minus burned.

        The sum uses Python integers, so it cannot overflow.

        Raises:
            ConservationError: Naming the first asset that does not add up, or a negative
                balance.
        """
        held = self._balance[: self._n_holders]
        if self._n_holders and (held < 0).any():
            h, a = (int(x) for x in np.argwhere(held < 0)[0])
            raise ConservationError(f"negative balance: {self._describe(h, a)} = {int(held[h, a])}")
        # Balances are non-negative int64: summing the high and low 32-bit halves separately
        # is exact for up to 2**31 holders and never overflows.
        low = (held & 0xFFFFFFFF).sum(axis=0, dtype=np.int64)
        high = (held >> 32).sum(axis=0, dtype=np.int64)
        for a, spec in enumerate(self.assets):
            total = (int(high[a]) << 32) + int(low[a])
            expected = int(self.minted[a]) - int(self.burned[a])
            if total != expected:
                raise ConservationError(
                    f"conservation violated for {spec.symbol}: holders sum to {total}, "
                    f"minted - burned = {expected}"
                )
