import MLATensor
