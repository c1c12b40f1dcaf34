-- Argo CD health of a GANInferenceService (ganforge.io/v1alpha1).
--   Healthy:     Ready (the stable revision serves and no rollout is under way)
--   Degraded:    Degraded (the source failed, a revision cannot serve, or a canary was rolled back)
--   Suspended:   a rollout waits for a person (AwaitingApproval, or Paused after an inconclusive analysis)
--   Progressing: Pending or Progressing, and while the operator has not yet acted on the newest spec
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "the operator has not yet acted on generation " .. generation
  return hs
end

local function message(kind)
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == kind then
        return c.message or ""
      end
    end
  end
  return ""
end

local rollout = status.rollout
if rollout ~= nil and (rollout.phase == "AwaitingApproval" or rollout.phase == "Paused") then
  hs.status = "Suspended"
  hs.message = "rollout of " .. rollout.revision .. " " .. rollout.phase .. ": " .. (rollout.message or "")
  return hs
end
if status.phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = message("Degraded")
elseif status.phase == "Ready" then
  hs.status = "Healthy"
  hs.message = message("Ready")
else
  hs.status = "Progressing"
  hs.message = message("Progressing")
end
return hs
