-- Argo CD health of a GANTrainingJob (ganforge.io/v1alpha1).
--   Healthy:     Succeeded (trained, exported, and promoted if spec.rollout asked for it)
--   Degraded:    Failed (the Failed condition's reason and message; a rolled-back rollout included)
--   Suspended:   spec.suspend stopped it, or its rollout waits for a person (AwaitingApproval, or Paused
--                after an inconclusive analysis)
--   Progressing: anything else, and while the operator has not yet acted on the newest spec
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

local function condition(kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind and c.status == "True" then
      return c
    end
  end
  return nil
end

if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded"
  if status.rollout ~= nil and status.rollout.message ~= nil then
    hs.message = "Succeeded: " .. status.rollout.message
  end
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  local failed = condition("Failed")
  if failed ~= nil then
    hs.message = (failed.reason or "Failed") .. ": " .. (failed.message or "")
  else
    hs.message = "Failed"
  end
  return hs
end
if status.phase == "Suspended" then
  hs.status = "Suspended"
  local suspended = condition("Suspended")
  hs.message = "Suspended: " .. ((suspended ~= nil and suspended.message) or "spec.suspend is true")
  return hs
end
local rollout = status.rollout
if status.phase == "RollingOut" and rollout ~= nil and (rollout.phase == "AwaitingApproval" or rollout.phase == "Paused") then
  hs.status = "Suspended"
  hs.message = "rollout " .. rollout.phase .. ": " .. (rollout.message or "")
  return hs
end
hs.status = "Progressing"
hs.message = status.phase
if status.progress ~= nil and status.progress.kimg ~= nil then
  hs.message = status.phase .. " at " .. status.progress.kimg .. " kimg"
end
return hs
