"""Tensor parallelism: the tp process group and the collectives the sharded layers use."""
from sglang.srt.distributed.communication_op import (
    broadcast_objects,
    tensor_model_parallel_all_gather,
    tensor_model_parallel_all_reduce,
)
from sglang.srt.distributed.parallel_state import (
    TPGroup,
    destroy_tensor_parallel,
    divide,
    get_tp_group,
    get_tp_rank,
    get_tp_size,
    init_tensor_parallel,
)
from sglang.srt.utils.network import free_port

__all__ = ["TPGroup", "broadcast_objects", "destroy_tensor_parallel", "divide", "free_port", "get_tp_group",
           "get_tp_rank", "get_tp_size", "init_tensor_parallel", "tensor_model_parallel_all_gather",
           "tensor_model_parallel_all_reduce"]
