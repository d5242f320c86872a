B=/tmp/tessera-capbench; U=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0)
P=$($B/tessera-mps start --gpu $U --base /run/tessera/mps); echo pipe=$P
mkdir -p /run/tessera/slices/mpsdbg; printf "version=1\nslice=mpsdbg\nregion=/run/tessera/slices/mpsdbg/region\npriority=1\ncap_mode=hard\ngpu=$U memory=60000000000 cores=25\nmps_pipe=$P\n" > /run/tessera/slices/mpsdbg/slice.conf; chmod 644 /run/tessera/slices/mpsdbg/slice.conf
TESSERA_SLICE_CONFIG=/run/tessera/slices/mpsdbg/slice.conf $B/capbench-direct calibrate --us 2000 --direct
CUDA_MPS_PIPE_DIRECTORY=$P CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25 $B/capbench calibrate --us 2000
CUDA_MPS_PIPE_DIRECTORY=$P $B/capbench calibrate --us 2000
$B/capbench calibrate --us 2000
echo get_server_list | CUDA_MPS_PIPE_DIRECTORY=$P nvidia-cuda-mps-control
cat /run/tessera/mps/*/log/control.log | tail -n 20; cat /run/tessera/mps/*/log/server.log | tail -n 20
$B/tessera-mps stop --gpu $U --base /run/tessera/mps
