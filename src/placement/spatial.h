// The compute-mode filter of the placement engine: which GPUs a container may take given the compute
// mode (time-sliced or spatial) of the slices they already hold, and the namespaces of spatial tenants.
//
// Rules (docs/compute.md, "Spatial mode"):
//  - time-sliced and spatial slices never share a GPU: MPS clients run outside the driver's time slicing
//    that Tessera's caps and priority steer, so a time-sliced neighbour would neither be capped against
//    the MPS server's work nor hold it back; keeping them apart keeps both modes' guarantees.
//  - a spatial GPU holds one namespace's pods, since an MPS client's fatal fault can end every client of
//    the same server; pods of several namespaces share one only when each of them allows it
//    (ContainerRequest::share_tenants, from tessera.dev/spatial-share-namespaces or the scheduler's flag).
// Pure functions over value types; thread-safe.
#pragma once

#include "placement/engine.h"

namespace tessera::placement {

// The mode a container runs in on a node whose default is `node_default`.
ComputeMode EffectiveMode(ComputeMode node_default, const ContainerRequest& c);

enum class ModeVerdict : uint8_t { kOk = 0, kOtherMode, kOtherTenant };

// Whether `c` may take a slice of a GPU whose slices are `use`.
ModeVerdict ModeAllows(ComputeMode node_default, const ModeUse& use, const ContainerRequest& c);

// Records that `c` took a slice of the GPU.
void ApplyMode(ComputeMode node_default, const ContainerRequest& c, ModeUse* use);

}  // namespace tessera::placement
