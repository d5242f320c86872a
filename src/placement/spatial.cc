#include "placement/spatial.h"

namespace tessera::placement {

ComputeMode EffectiveMode(ComputeMode node_default, const ContainerRequest& c) {
  if (c.mode != ComputeMode::kNodeDefault) return c.mode;
  return node_default == ComputeMode::kSpatial ? ComputeMode::kSpatial : ComputeMode::kTimeSliced;
}

ModeVerdict ModeAllows(ComputeMode node_default, const ModeUse& use, const ContainerRequest& c) {
  if (EffectiveMode(node_default, c) == ComputeMode::kTimeSliced)
    return use.spatial > 0 ? ModeVerdict::kOtherMode : ModeVerdict::kOk;
  if (use.time_sliced > 0) return ModeVerdict::kOtherMode;
  if (use.spatial == 0 || use.tenant == c.tenant) return ModeVerdict::kOk;
  return c.share_tenants && use.all_share ? ModeVerdict::kOk : ModeVerdict::kOtherTenant;
}

void ApplyMode(ComputeMode node_default, const ContainerRequest& c, ModeUse* use) {
  if (EffectiveMode(node_default, c) == ComputeMode::kTimeSliced) {
    ++use->time_sliced;
    return;
  }
  if (use->spatial == 0) use->tenant = c.tenant;
  else if (use->tenant != c.tenant) use->tenant = kMixedTenants;
  use->all_share = use->all_share && c.share_tenants;
  ++use->spatial;
}

}  // namespace tessera::placement
