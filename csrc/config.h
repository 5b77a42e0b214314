// Tile and block sizes shared by every kernel. One place, so CPU and CUDA bin identically.
#pragma once

#define PINNGS_TILE 16          // detector tiles are TILE x TILE pixels
#define PINNGS_VOX_SLAB 4       // voxelizer: planes along axis 0 per work item (CPU)
#define PINNGS_BLOCK3D 8        // voxelizer: CUDA block edge
#define PINNGS_PARAMS 11        // per (view, Gaussian) stored parameters, see gauss_math.h
