/* Generated from metric-event.schema.json (python -m llm.telemetry.schema) by
 * json-schema-to-typescript: do not edit, run `npm run gen:types`. */

export type MetricEventSchema = TrainEvent | EvalEvent | RunStateEvent | SystemEvent | ParamsEvent | ControlEvent;
/**
 * global gradient norm before clipping (None: unknown)
 */
export type GradNorm = number | null;
/**
 * mean training loss of this step (nats/token), all ranks
 */
export type Loss = number;
/**
 * fp16 dynamic loss scale; 1.0 in fp32/bf16
 */
export type LossScale = number;
export type Lr = number;
/**
 * peak accelerator memory of rank 0 in GB (None on CPU)
 */
export type MemoryGb = number | null;
/**
 * model FLOPs utilisation against the hardware peak, 0..1
 */
export type Mfu = number;
export type RunId = string;
/**
 * position in the run's event stream, increasing by one
 */
export type Seq = number;
/**
 * optimizer steps skipped for fp16 overflow so far
 */
export type SkippedSteps = number;
/**
 * optimizer steps completed
 */
export type Step = number;
/**
 * mean seconds per optimizer step since the last record
 */
export type StepTime = number;
/**
 * achieved model TFLOP/s, all ranks
 */
export type Tflops = number;
/**
 * Unix time in seconds when the event was made
 */
export type Time = number;
export type TokensPerS = number;
/**
 * training tokens consumed so far, all ranks
 */
export type TokensSeen = number;
export type Type = "train";
export type RunId1 = string;
/**
 * position in the run's event stream, increasing by one
 */
export type Seq1 = number;
export type Step1 = number;
/**
 * Unix time in seconds when the event was made
 */
export type Time1 = number;
export type Type1 = "eval";
/**
 * validation bits per byte of text
 */
export type ValBpb = number;
/**
 * mean validation loss (nats/token)
 */
export type ValLoss = number;
export type Detail = string;
export type RunId2 = string;
/**
 * position in the run's event stream, increasing by one
 */
export type Seq2 = number;
export type State = "started" | "resumed" | "paused" | "unpaused" | "checkpoint_saved" | "finished" | "stopped";
export type Step2 = number;
/**
 * Unix time in seconds when the event was made
 */
export type Time2 = number;
export type Type2 = "run_state";
/**
 * GPU index on its node, or the rank's local rank on a CPU
 */
export type Index = number;
export type Kind = "gpu" | "cpu";
/**
 * GPU memory, or the node's RAM
 */
export type MemoryTotalGb = number | null;
/**
 * GPU memory in use, or the rank's resident memory
 */
export type MemoryUsedGb = number | null;
/**
 * GPU model, or the CPU model
 */
export type Name = string;
/**
 * host name
 */
export type Node = string;
export type PowerW = number | null;
/**
 * global rank reporting it
 */
export type Rank = number;
export type TemperatureC = number | null;
/**
 * percent busy, 0..100 (a rank's process: of all cores)
 */
export type Utilization = number | null;
/**
 * every rank's device, rank order
 */
export type Devices = DeviceStats[];
export type RunId3 = string;
/**
 * position in the run's event stream, increasing by one
 */
export type Seq3 = number;
export type Step3 = number;
/**
 * Unix time in seconds when the event was made
 */
export type Time3 = number;
export type Type3 = "system";
export type Counts = number[];
/**
 * bin edges, one more than counts
 */
export type Edges = number[];
export type Name1 = string;
/**
 * before clipping; None where the gradient is gone
 */
export type GradNorm1 = number | null;
/**
 * parameter name, e.g. blocks.0.attn.c_attn.weight
 */
export type Name2 = string;
export type Numel = number;
/**
 * ‖w_after − w_before‖ / ‖w_before‖ over the optimizer step; None while w_before = 0
 */
export type UpdateRatio = number | null;
export type WeightNorm = number;
export type Layers = LayerStats[];
export type RunId4 = string;
/**
 * position in the run's event stream, increasing by one
 */
export type Seq4 = number;
export type Step4 = number;
/**
 * Unix time in seconds when the event was made
 */
export type Time4 = number;
export type Type4 = "params";
export type Action = "pause" | "resume" | "save" | "stop" | "set_lr";
export type CommandId = string;
export type Detail1 = string;
/**
 * set_lr: the multiplier on the JSON's schedule
 */
export type LrScale = number | null;
export type RunId5 = string;
/**
 * position in the run's event stream, increasing by one
 */
export type Seq5 = number;
export type Status = "applied" | "rejected";
/**
 * optimizer steps completed when every rank applied it
 */
export type Step5 = number;
/**
 * Unix time in seconds when the event was made
 */
export type Time5 = number;
export type Type5 = "control";

export interface TrainEvent {
  grad_norm: GradNorm;
  loss: Loss;
  loss_scale: LossScale;
  lr: Lr;
  memory_gb: MemoryGb;
  mfu: Mfu;
  run_id: RunId;
  seq: Seq;
  skipped_steps: SkippedSteps;
  step: Step;
  step_time: StepTime;
  tflops: Tflops;
  time: Time;
  tokens_per_s: TokensPerS;
  tokens_seen: TokensSeen;
  type?: Type;
}
export interface EvalEvent {
  run_id: RunId1;
  seq: Seq1;
  step: Step1;
  time: Time1;
  type?: Type1;
  val_bpb: ValBpb;
  val_loss: ValLoss;
}
export interface RunStateEvent {
  detail?: Detail;
  run_id: RunId2;
  seq: Seq2;
  state: State;
  step: Step2;
  time: Time2;
  type?: Type2;
}
export interface SystemEvent {
  devices: Devices;
  run_id: RunId3;
  seq: Seq3;
  step: Step3;
  time: Time3;
  type?: Type3;
}
/**
 * One device's load: a GPU (from NVML), or where there is none the CPU share of one rank (psutil).
 */
export interface DeviceStats {
  index: Index;
  kind: Kind;
  memory_total_gb: MemoryTotalGb;
  memory_used_gb: MemoryUsedGb;
  name: Name;
  node: Node;
  power_w?: PowerW;
  rank: Rank;
  temperature_c?: TemperatureC;
  utilization: Utilization;
}
export interface ParamsEvent {
  histogram?: Histogram | null;
  layers: Layers;
  run_id: RunId4;
  seq: Seq4;
  step: Step4;
  time: Time4;
  type?: Type4;
}
export interface Histogram {
  counts: Counts;
  edges: Edges;
  name: Name1;
}
/**
 * Norms of one parameter tensor, from every rank's partition (sums of squares, reduced).
 */
export interface LayerStats {
  grad_norm: GradNorm1;
  name: Name2;
  numel: Numel;
  update_ratio: UpdateRatio;
  weight_norm: WeightNorm;
}
/**
 * A dashboard command, acknowledged by rank 0 with the step after which every rank applied it.
 */
export interface ControlEvent {
  action: Action;
  command_id: CommandId;
  detail?: Detail1;
  lr_scale?: LrScale;
  run_id: RunId5;
  seq: Seq5;
  status: Status;
  step: Step5;
  time: Time5;
  type?: Type5;
}
