"""Radix prefix cache over token ids: shared prompt prefixes reuse their KV slots.

Each node holds a run of token ids and the KV slots that hold them. ``lock_ref`` counts
the running requests that use the node (and so its ancestors); only unlocked leaves are
evicted, least recently used first.
"""
from __future__ import annotations

import heapq
import time
from typing import Callable

import torch


class TreeNode:
    __slots__ = ("children", "parent", "key", "value", "lock_ref", "last_access")

    def __init__(self, parent: "TreeNode | None" = None) -> None:
        self.children: dict[int, TreeNode] = {}
        self.parent = parent
        self.key: list[int] = []
        self.value: torch.Tensor | None = None  # int64 slots, len == len(key); None only for the root
        self.lock_ref = 0
        self.last_access = time.monotonic()

    def __lt__(self, other: "TreeNode") -> bool:
        return self.last_access < other.last_access


def _match_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RadixCache:
    def __init__(self, free_slots: Callable[[torch.Tensor], None], device: torch.device) -> None:
        self.free_slots = free_slots
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.root = TreeNode()
        self.root.lock_ref = 1  # the root is never evicted
        self.evictable_size = 0
        self.protected_size = 0

    # ---- lookup / insert -------------------------------------------------------------
    def match_prefix(self, key: list[int]) -> tuple[torch.Tensor, TreeNode]:
        """Longest cached prefix of key: (its slots, the node where it ends)."""
        node, values = self.root, []
        now = time.monotonic()
        while key and key[0] in node.children:
            child = node.children[key[0]]
            child.last_access = now
            n = _match_len(child.key, key)
            if n < len(child.key):
                child = self._split(child, n)
            assert child.value is not None  # a child is never the root
            values.append(child.value)
            node, key = child, key[n:]
        if values:
            return torch.cat(values), node
        return torch.empty(0, dtype=torch.int64, device=self.device), node

    def insert(self, key: list[int], value: torch.Tensor) -> int:
        """Insert key -> slots; returns how many leading tokens were already cached
        (the caller frees its own duplicate slots for those)."""
        node, done = self.root, 0
        now = time.monotonic()
        while key:
            node.last_access = now
            child = node.children.get(key[0])
            if child is None:
                new = TreeNode(node)
                new.key, new.value = list(key), value.clone()
                node.children[key[0]] = new
                self.evictable_size += len(key)
                return done
            n = _match_len(child.key, key)
            if n < len(child.key):
                child = self._split(child, n)
            done += n
            node, key, value = child, key[n:], value[n:]
        node.last_access = now
        return done

    def _split(self, child: TreeNode, n: int) -> TreeNode:
        """Split child so that its first n tokens become a new parent node."""
        value = child.value
        assert value is not None  # a child is never the root
        new = TreeNode(child.parent)
        new.key, new.value = child.key[:n], value[:n]
        new.lock_ref, new.last_access = child.lock_ref, child.last_access
        new.children = {child.key[n]: child}
        assert child.parent is not None
        child.parent.children[child.key[0]] = new
        child.parent = new
        child.key, child.value = child.key[n:], value[n:]
        return new

    # ---- locking -----------------------------------------------------------------------
    def inc_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.key)
                self.protected_size += len(node.key)
            node.lock_ref += 1
            assert node.parent is not None  # only the root has no parent
            node = node.parent

    def dec_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root:
            node.lock_ref -= 1
            assert node.lock_ref >= 0, "radix cache lock underflow"
            if node.lock_ref == 0:
                self.evictable_size += len(node.key)
                self.protected_size -= len(node.key)
            assert node.parent is not None  # only the root has no parent
            node = node.parent

    # ---- eviction ----------------------------------------------------------------------
    def evict(self, num_tokens: int) -> int:
        """Free at least num_tokens slots from unlocked leaves (LRU first) if possible."""
        leaves = [n for n in self._all_nodes() if not n.children and n.lock_ref == 0 and n is not self.root]
        heapq.heapify(leaves)
        freed = 0
        while freed < num_tokens and leaves:
            leaf = heapq.heappop(leaves)
            assert leaf.value is not None  # the root is never a leaf here
            self.free_slots(leaf.value)
            freed += len(leaf.key)
            self.evictable_size -= len(leaf.key)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.key[0]]
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(leaves, parent)
        return freed

    def _all_nodes(self) -> list[TreeNode]:
        out, stack = [], [self.root]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(n.children.values())
        return out

    def total_size(self) -> int:
        return sum(len(n.key) for n in self._all_nodes())
